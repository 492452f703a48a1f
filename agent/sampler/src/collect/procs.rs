//! Facts about one process, given its pid (NVML names the pids; /proc says who and what they are).
//!
//! The agent runs as an ordinary user, so another user's process may be readable only in part,
//! and any process may exit between two reads. Every field is therefore read on its own: what
//! could be read is kept, what could not is `None`, and nothing here fails the whole read.
//!
//! Parsing is by hand, on purpose:
//! - `/proc/PID/stat`: procfs's `Stat` parses all 52 fields and slices the text at `(` − 1 and
//!   `)` + 2 without bounds checks; we need two fields, found after the *last* `)` so that a
//!   name with spaces and parentheses (`1234 (my (weird) prog) S …`) is read right.
//! - `/proc/PID/status`: procfs's `Status` requires some fifteen fields and splits each line at
//!   the first `:`; we need the `Uid:` line only.
//! - `/proc/stat` `btime`, `/proc/PID/cgroup`, `/proc/PID/cmdline`: one line or one rule each.
//!
//! From procfs we take `ticks_per_second()` (sysconf `_SC_CLK_TCK`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::redact::Redactor;

/// Why a /proc text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no {0} in the text")]
    Missing(&'static str),
    #[error("{what}: not a number: {value:?}")]
    BadNumber { what: &'static str, value: String },
}

/// What the agent knows about one process. Each field is `None` when it could not be read (the
/// process exited, or /proc denied it); `None` never stands for 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// Real uid, from the `Uid:` line of /proc/PID/status.
    pub uid: Option<u32>,
    /// Name of `uid` through NSS (`getpwuid_r`, so LDAP and SSSD users resolve too); `None` when
    /// the uid has no name.
    pub username: Option<String>,
    /// Process name: /proc/PID/comm, which the kernel cuts to 15 bytes; when it was cut and the
    /// base name of argv[0] extends it, that longer name.
    pub basename: Option<String>,
    /// Start time, Unix milliseconds (boot time + field 22 of /proc/PID/stat). Boot time has
    /// one-second resolution, so this is good to about a second.
    pub started_ms: Option<u64>,
    /// Whole seconds since `started_ms`, at the `now` given to [`ProcReader::read`].
    pub running_s: Option<u64>,
    /// The container the process runs in, from /proc/PID/cgroup.
    pub container: Option<Container>,
    /// Command line, only when enabled: arguments joined by spaces, cut to the configured length
    /// with "…" at the end when cut. `None` when disabled, unreadable or empty (kernel threads,
    /// zombies).
    pub cmdline: Option<String>,
}

/// A container named by a process's cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// "docker", "containerd", "cri-o" or "podman".
    pub runtime: &'static str,
    /// The full 64-hex-digit container id.
    pub id: String,
}

/// Most bytes read of one /proc text (stat, status, cgroup): far above what the kernel writes,
/// a bound all the same.
const PROC_TEXT_MAX: u64 = 256 * 1024;
/// The kernel's limit on /proc/PID/comm (TASK_COMM_LEN − 1).
const COMM_MAX: usize = 15;
/// Longest argv[0] read to extend a cut comm; argv[0] is a path, and PATH_MAX is 4096.
const ARGV0_READ_MAX: u64 = 4096;
/// Bytes read past the command-line limit, so that trailing NULs alone do not look like a cut.
const CMDLINE_SLACK: usize = 64;
/// Most uids kept in the name cache; a cluster node sees few users, this only bounds a leak.
const USER_CACHE_MAX: usize = 4096;
/// How long a uid → name answer is trusted: long enough that LDAP is asked rarely, short enough
/// that a user added to the directory after the agent started gets a name.
const USER_CACHE_TTL: Duration = Duration::from_secs(600);

/// Reads [`ProcFacts`]; owns the uid → name cache and what is fixed for the host's lifetime.
#[derive(Debug)]
pub struct ProcReader {
    root: PathBuf,
    users: UserCache,
    /// Read on first use, and again while it could not be read.
    boot_time_s: Option<u64>,
    /// `None` when sysconf gave an impossible 0.
    ticks_per_s: Option<u64>,
    cmdline_max: Option<usize>,
    /// Masks secrets in command lines.
    redact: Redactor,
    /// Facts of the processes seen in the last pass, keyed by pid, with the start time (in
    /// ticks) that identifies the process: a GPU job lives for hours and its name and
    /// container do not change, so a later pass reuses them while the pid still names the same
    /// process and /proc/PID is still owned by the same user (one `stat` of the directory: a
    /// launcher that drops to another user after the agent first saw it is read again).
    known: HashMap<u32, Known>,
    /// Whether `root` is the live /proc, where pidfds can stand in for re-reading.
    live_proc: bool,
}

/// A process read in an earlier pass.
#[derive(Debug)]
struct Known {
    /// Start time in clock ticks since boot: with the pid, it names one process.
    start: u64,
    /// Owner of /proc/PID (the process's effective uid) when `facts` were read.
    owner: Option<u32>,
    facts: ProcFacts,
    /// A pidfd of the process (Linux 5.3+): it becomes readable when the process exits, so one
    /// `poll` over all of them tells which cached pids still name the same processes, without
    /// reading /proc at all.
    pidfd: Option<OwnedFd>,
}

fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// The cached pids whose pidfd says the process has exited (or cannot say).
fn exited_pids(known: &HashMap<u32, Known>) -> std::collections::HashSet<u32> {
    use rustix::event::{poll, PollFd, PollFlags};
    let with_fd: Vec<(u32, &OwnedFd)> = known
        .iter()
        .filter_map(|(pid, k)| k.pidfd.as_ref().map(|fd| (*pid, fd)))
        .collect();
    let mut fds: Vec<PollFd<'_>> = with_fd
        .iter()
        .map(|(_, fd)| PollFd::new(*fd, PollFlags::IN))
        .collect();
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if poll(&mut fds, Some(&zero)).is_err() {
        // Cannot tell: treat every cached process as unknown, so all are read again.
        return with_fd.iter().map(|(pid, _)| *pid).collect();
    }
    with_fd
        .iter()
        .zip(&fds)
        .filter(|(_, fd)| !fd.revents().is_empty())
        .map(|((pid, _), _)| *pid)
        .collect()
}

impl ProcReader {
    /// A reader of /proc. `cmdline_max`: longest command line reported, in bytes; `None` turns
    /// command lines off.
    pub fn new(cmdline_max: Option<usize>) -> Self {
        Self::with_root("/proc", cmdline_max)
    }

    /// A reader of a /proc-like tree at `root` (tests build one in a temporary directory).
    pub fn with_root(root: impl Into<PathBuf>, cmdline_max: Option<usize>) -> Self {
        let ticks = procfs::ticks_per_second();
        let root: PathBuf = root.into();
        Self {
            live_proc: root == Path::new("/proc"),
            root,
            users: UserCache::default(),
            boot_time_s: None,
            ticks_per_s: (ticks > 0).then_some(ticks),
            cmdline_max,
            redact: Redactor::default(),
            known: HashMap::new(),
        }
    }

    /// Masks secrets in command lines with `redact` (the built-in names are always masked).
    pub fn with_redactor(mut self, redact: Redactor) -> Self {
        self.redact = redact;
        self
    }

    /// Facts for every pid of one sampling pass. Processes not in `pids` are forgotten, so the
    /// cache holds at most one pass's processes.
    pub fn read_all(&mut self, pids: &[u32], now: SystemTime) -> HashMap<u32, ProcFacts> {
        let mut known = std::mem::take(&mut self.known);
        let exited = exited_pids(&known);
        let mut out = HashMap::with_capacity(pids.len());
        for &pid in pids {
            if out.contains_key(&pid) {
                continue;
            }
            let reusable = known.remove(&pid).and_then(|k| {
                let same = match &k.pidfd {
                    // A live pidfd proves the pid still names the process it was opened for.
                    Some(_) => !exited.contains(&pid),
                    // Without one, compare start times (one read of /proc/PID/stat).
                    None => self.read_stat(pid).is_some_and(|s| s.starttime == k.start),
                };
                // The same process under another user (setpriv, gosu, su: they change uid,
                // then exec) is read again: its user, and likely its name, are new.
                (same && self.owner(pid) == k.owner).then_some(k)
            });
            let facts = match reusable {
                Some(mut k) => {
                    k.facts.running_s = k.facts.started_ms.and_then(|t| running_s(t, now));
                    let facts = k.facts.clone();
                    self.known.insert(pid, k);
                    facts
                }
                None => {
                    // The pidfd is opened before /proc is read: if the process is still alive
                    // at the next pass, everything read now was read of that same process.
                    let pidfd = self.live_proc.then(|| open_pidfd(pid)).flatten();
                    // Likewise the owner: a change after this is seen at the next pass.
                    let owner = self.owner(pid);
                    let stat = self.read_stat(pid);
                    let start = stat.as_ref().map(|s| s.starttime);
                    let facts = self.read_with_stat(pid, stat, now);
                    // Only a fully identified process is worth keeping.
                    if let (Some(start), Some(_)) = (start, facts.uid) {
                        let k = Known {
                            start,
                            owner,
                            facts: facts.clone(),
                            pidfd,
                        };
                        self.known.insert(pid, k);
                    }
                    facts
                }
            };
            out.insert(pid, facts);
        }
        out
    }

    /// Owner uid of /proc/PID; `None` when the process is gone.
    fn owner(&self, pid: u32) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.root.join(pid.to_string()))
            .ok()
            .map(|m| m.uid())
    }

    fn read_stat(&self, pid: u32) -> Option<ProcStat> {
        let path = self.root.join(pid.to_string()).join("stat");
        read_lossy(&path).and_then(|text| {
            parse_stat(&text)
                .map_err(|e| tracing::debug!(pid, "/proc/{pid}/stat: {e}"))
                .ok()
        })
    }

    /// Everything readable about `pid` at `now`. Never fails: a pid that does not exist gives
    /// all `None`.
    ///
    /// The username lookup may go to LDAP on a cache miss; call this off any async executor.
    pub fn read(&mut self, pid: u32, now: SystemTime) -> ProcFacts {
        let stat = self.read_stat(pid);
        self.read_with_stat(pid, stat, now)
    }

    fn read_with_stat(&mut self, pid: u32, stat: Option<ProcStat>, now: SystemTime) -> ProcFacts {
        let dir = self.root.join(pid.to_string());
        let uid = read_lossy(&dir.join("status")).and_then(|text| {
            parse_status_uid(&text)
                .map_err(|e| tracing::debug!(pid, "/proc/{pid}/status: {e}"))
                .ok()
        });
        let username = uid.and_then(|uid| self.users.name(uid));

        let started_ms = stat.as_ref().and_then(|s| self.started_ms(s.starttime));
        let running_s = started_ms.and_then(|started| running_s(started, now));

        // stat carries the same name as comm; comm is read only when stat could not be.
        let comm = match stat {
            Some(s) => Some(s.comm),
            None => read_lossy(&dir.join("comm"))
                .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_string()),
        };
        let basename = comm.map(|comm| {
            if comm.len() < COMM_MAX {
                return comm;
            }
            // Exactly 15 bytes: probably cut by the kernel ("nvidia-cuda-mps" for
            // nvidia-cuda-mps-control). argv[0] holds the whole name; only its base name is
            // used, so this is no command-line disclosure when command lines are off.
            read_prefix(&dir.join("cmdline"), ARGV0_READ_MAX)
                .and_then(|(bytes, _)| extend_comm(&comm, &bytes))
                .unwrap_or(comm)
        });

        let container = read_lossy(&dir.join("cgroup")).and_then(|text| parse_container(&text));

        let cmdline = self.cmdline_max.and_then(|max| {
            let limit = max.saturating_add(CMDLINE_SLACK);
            read_prefix(&dir.join("cmdline"), limit as u64)
                .and_then(|(bytes, more)| parse_cmdline(&bytes, more, max, &self.redact))
        });

        ProcFacts {
            uid,
            username,
            basename,
            started_ms,
            running_s,
            container,
            cmdline,
        }
    }

    fn started_ms(&mut self, starttime_ticks: u64) -> Option<u64> {
        if self.boot_time_s.is_none() {
            self.boot_time_s = read_lossy(&self.root.join("stat")).and_then(|text| {
                parse_btime(&text)
                    .map_err(|e| tracing::debug!("/proc/stat: {e}"))
                    .ok()
            });
        }
        let boot_ms = self.boot_time_s?.checked_mul(1000)?;
        let since_boot_ms = starttime_ticks.checked_mul(1000)? / self.ticks_per_s?;
        boot_ms.checked_add(since_boot_ms)
    }
}

/// Whole seconds from `started_ms` to `now`. A process started within the last second may seem
/// to start after `now` (boot time is whole seconds): that is 0 seconds, not an error.
fn running_s(started_ms: u64, now: SystemTime) -> Option<u64> {
    let now_ms = u64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(now_ms.saturating_sub(started_ms) / 1000)
}

/// The two fields of /proc/PID/stat the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 2, without its parentheses.
    pub comm: String,
    /// Field 22: start time after boot, in clock ticks.
    pub starttime: u64,
}

/// Parses /proc/PID/stat. The name is everything between the first `(` and the *last* `)`: a
/// name may itself hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Result<ProcStat, ParseError> {
    let open = text
        .find('(')
        .ok_or(ParseError::Missing("`(` before the name"))?;
    let close = text
        .rfind(')')
        .ok_or(ParseError::Missing("`)` after the name"))?;
    let comm = text
        .get(open + 1..close)
        .ok_or(ParseError::Missing("name"))?;
    // After the name come fields 3 (state) onwards, so field 22 is the 20th.
    let raw = text
        .get(close + 1..)
        .and_then(|rest| rest.split_whitespace().nth(22 - 3))
        .ok_or(ParseError::Missing("starttime (field 22)"))?;
    let starttime = raw.parse().map_err(|_| ParseError::BadNumber {
        what: "starttime",
        value: raw.to_string(),
    })?;
    Ok(ProcStat {
        comm: comm.to_string(),
        starttime,
    })
}

/// The real uid: the first number of the `Uid:` line of /proc/PID/status.
pub fn parse_status_uid(text: &str) -> Result<u32, ParseError> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .ok_or(ParseError::Missing("Uid: line"))?;
    let raw = line
        .split_whitespace()
        .next()
        .ok_or(ParseError::Missing("real uid"))?;
    raw.parse().map_err(|_| ParseError::BadNumber {
        what: "uid",
        value: raw.to_string(),
    })
}

/// Boot time, Unix seconds: the `btime` line of /proc/stat.
pub fn parse_btime(text: &str) -> Result<u64, ParseError> {
    let raw = text
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .ok_or(ParseError::Missing("btime line"))?
        .trim();
    raw.parse().map_err(|_| ParseError::BadNumber {
        what: "btime",
        value: raw.to_string(),
    })
}

/// A command line from the bytes of /proc/PID/cmdline: secrets masked argument by argument
/// ([`Redactor`]), NUL separators become spaces, and the text is cut to at most `max` bytes (on
/// a char boundary) followed by "…" when longer, or when `more` says the bytes are only the
/// start of the file. `None` when empty.
pub fn parse_cmdline(bytes: &[u8], more: bool, max: usize, redact: &Redactor) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut args: Vec<&str> = text.trim_end_matches('\0').split('\0').collect();
    if more {
        // The last argument was cut by the read: a URL whose '@' fell beyond the cut would
        // show its password's start. Keep only its scheme.
        if let Some(last) = args.last_mut() {
            if let Some(i) = last.find("://") {
                *last = &last[..i + 3];
            }
        }
    }
    let text = redact.args(args).join(" ");
    if text.is_empty() {
        return None;
    }
    if text.len() <= max && !more {
        return Some(text);
    }
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}…", &text[..cut]))
}

/// The base name of argv[0] when it starts with `comm` (a name the kernel cut to 15 bytes).
fn extend_comm(comm: &str, cmdline: &[u8]) -> Option<String> {
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    let base = argv0.rsplit('/').next()?;
    (base.len() > comm.len() && base.starts_with(comm)).then(|| base.to_string())
}

/// The container named by /proc/PID/cgroup text (cgroup v1 or v2), or `None` for a process
/// outside any container (a login session, a system service).
///
/// Recognised, innermost path component first:
/// - `docker-<id>.scope` (systemd driver) and `/docker/<id>` (cgroupfs driver): docker;
/// - `cri-containerd-<id>.scope`, `nerdctl-<id>.scope`, and a bare `<id>` under `kubepods…`
///   (cgroupfs driver; Kubernetes dropped dockershim in 1.24, so that is containerd): containerd;
/// - `crio-<id>.scope` and `crio-<id>`: cri-o;
/// - `libpod-<id>.scope` (also under `machine.slice`, or a rootless user's slice) and
///   `/libpod_parent/…/<id>`: podman.
///
/// `libpod-conmon-<id>` and `crio-conmon-<id>` are the runtime's monitor process, not the
/// container, and do not count.
pub fn parse_container(cgroup_text: &str) -> Option<Container> {
    cgroup_text.lines().find_map(|line| {
        // hierarchy-ID:controllers:path; the path may itself contain ':'.
        let path = line.splitn(3, ':').nth(2)?;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // Innermost first: a container running systemd (or podman's `…/container` leaf) has
        // cgroups below its own scope.
        (0..parts.len())
            .rev()
            .find_map(|i| container_in_part(parts[i], &parts[..i]))
    })
}

fn container_in_part(part: &str, parents: &[&str]) -> Option<Container> {
    const PREFIXES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("nerdctl-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let name = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            // `libpod-conmon-<id>` fails the id test here: "conmon-…" is not 64 hex digits.
            return is_container_id(id).then(|| Container {
                runtime,
                id: id.to_string(),
            });
        }
    }
    if !is_container_id(part) {
        return None;
    }
    let runtime = if parents.contains(&"docker") {
        "docker"
    } else if parents.iter().any(|p| p.starts_with("kubepods")) {
        "containerd"
    } else if parents.contains(&"libpod_parent") {
        "podman"
    } else {
        // A bare id under an unknown parent: no guessing which runtime made it.
        return None;
    };
    Some(Container {
        runtime,
        id: part.to_string(),
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A /proc file as text. Lossy, because a process name may be any bytes, and one bad byte must
/// not lose the other fields. `None` when unreadable; a file that vanished (the process exited)
/// is expected and not logged.
fn read_lossy(path: &Path) -> Option<String> {
    // Not `fs::read` nor `File::read_to_end`: /proc files report size 0, so their size hint
    // costs a statx and an lseek per file, then small probing reads. `take` skips the hint,
    // bounds the read, and one page covers stat, status and cgroup in one or two reads.
    let mut bytes = Vec::with_capacity(4096);
    match File::open(path).and_then(|f| f.take(PROC_TEXT_MAX).read_to_end(&mut bytes)) {
        Ok(_) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            log_read_error(path, &e);
            None
        }
    }
}

/// The first `limit` bytes of a file, and whether there may be more.
fn read_prefix(path: &Path, limit: u64) -> Option<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    let result = File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes));
    match result {
        Ok(n) => Some((bytes, n as u64 >= limit)),
        Err(e) => {
            log_read_error(path, &e);
            None
        }
    }
}

fn log_read_error(path: &Path, e: &io::Error) {
    // ESRCH: the process exited after its directory was opened.
    let esrch = nix::errno::Errno::ESRCH as i32;
    if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(esrch) {
        tracing::debug!("{}: {e}", path.display());
    }
}

/// uid → user name, bounded and expiring (see [`USER_CACHE_TTL`]).
#[derive(Debug, Default)]
struct UserCache {
    entries: HashMap<u32, (Option<String>, Instant)>,
}

impl UserCache {
    fn name(&mut self, uid: u32) -> Option<String> {
        let now = Instant::now();
        if let Some((name, at)) = self.entries.get(&uid) {
            if now.duration_since(*at) < USER_CACHE_TTL {
                return name.clone();
            }
        }
        let name = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(user) => user.map(|u| u.name),
            // A failed lookup (LDAP down) is not cached: the next read asks again.
            Err(e) => {
                tracing::debug!(uid, "user lookup: {e}");
                return None;
            }
        };
        if self.entries.len() >= USER_CACHE_MAX {
            self.entries
                .retain(|_, (_, at)| now.duration_since(*at) < USER_CACHE_TTL);
            if self.entries.len() >= USER_CACHE_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(uid, (name.clone(), now));
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4e8ac6d5b2f0a1c3e9d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5";

    fn container(runtime: &'static str) -> Option<Container> {
        Some(Container {
            runtime,
            id: HEX.to_string(),
        })
    }

    #[test]
    fn docker_cgroup_v2_systemd() {
        let text = format!("0::/system.slice/docker-{HEX}.scope\n");
        assert_eq!(parse_container(&text), container("docker"));
    }

    #[test]
    fn docker_cgroup_v1_cgroupfs() {
        let text = format!(
            "12:pids:/docker/{HEX}\n11:memory:/docker/{HEX}\n1:name=systemd:/docker/{HEX}\n0::/\n"
        );
        assert_eq!(parse_container(&text), container("docker"));
    }

    #[test]
    fn containerd_kubernetes_systemd() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{HEX}.scope\n"
        );
        assert_eq!(parse_container(&text), container("containerd"));
    }

    #[test]
    fn containerd_kubernetes_cgroupfs_v1() {
        let text = format!(
            "11:memory:/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{HEX}\n\
             10:cpu,cpuacct:/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{HEX}\n"
        );
        assert_eq!(parse_container(&text), container("containerd"));
    }

    #[test]
    fn crio() {
        let text =
            format!("0::/kubepods.slice/kubepods-pod1234.slice/crio-{HEX}.scope/container\n");
        assert_eq!(parse_container(&text), container("cri-o"));
        let conmon = format!("0::/kubepods.slice/kubepods-pod1234.slice/crio-conmon-{HEX}.scope\n");
        assert_eq!(parse_container(&conmon), None);
    }

    #[test]
    fn podman() {
        let rootful = format!("0::/machine.slice/libpod-{HEX}.scope\n");
        assert_eq!(parse_container(&rootful), container("podman"));
        let rootless = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{HEX}.scope/container\n"
        );
        assert_eq!(parse_container(&rootless), container("podman"));
        let cgroupfs = format!("5:memory:/libpod_parent/libpod-{HEX}\n");
        assert_eq!(parse_container(&cgroupfs), container("podman"));
    }

    #[test]
    fn podman_conmon_is_not_the_container() {
        let text = format!("0::/machine.slice/libpod-conmon-{HEX}.scope\n");
        assert_eq!(parse_container(&text), None);
    }

    #[test]
    fn no_container() {
        assert_eq!(
            parse_container("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(parse_container("0::/\n"), None);
        assert_eq!(parse_container(""), None);
        // A 64-hex name with no runtime above it: not guessed.
        assert_eq!(parse_container(&format!("0::/custom/{HEX}\n")), None);
        // Not 64 hex digits.
        assert_eq!(
            parse_container("0::/system.slice/docker-4e8ac6d5.scope\n"),
            None
        );
        assert_eq!(parse_container("0::/system.slice/docker.service\n"), None);
    }

    #[test]
    fn stat_with_spaces_and_parentheses_in_the_name() {
        let text = "1234 (my (weird) prog) S 1 1234 1234 0 -1 4194304 120 0 0 0 3 1 0 0 20 0 1 0 \
                    987654 12345678 456 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Ok(ProcStat {
                comm: "my (weird) prog".to_string(),
                starttime: 987654,
            })
        );
    }

    #[test]
    fn stat_garbage_is_an_error_not_a_panic() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat(")(").is_err());
        assert!(parse_stat("1 (x)").is_err());
        assert!(parse_stat("1 (x) S 1 2 3").is_err());
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let text = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
                    Uid:\t1001\t0\t0\t0\nGid:\t1001\t1001\t1001\t1001\n";
        assert_eq!(parse_status_uid(text), Ok(1001));
        assert_eq!(
            parse_status_uid("Name:\tx\n"),
            Err(ParseError::Missing("Uid: line"))
        );
    }

    #[test]
    fn btime() {
        let text = "cpu  1 2 3 4 5 6 7 8 0 0\nintr 1 2\nctxt 99\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(parse_btime(text), Ok(1_700_000_000));
        assert!(parse_btime("cpu 1 2 3\n").is_err());
    }

    #[test]
    fn cmdline_joins_and_cuts_on_a_char_boundary() {
        assert_eq!(
            parse_cmdline(
                b"python3\0train.py\0--lr=3e-4\0",
                false,
                100,
                &Redactor::default()
            ),
            Some("python3 train.py --lr=3e-4".to_string())
        );
        assert_eq!(parse_cmdline(b"", false, 100, &Redactor::default()), None);
        assert_eq!(parse_cmdline(b"\0", false, 100, &Redactor::default()), None);
        assert_eq!(
            parse_cmdline(b"abcdefghij\0", false, 4, &Redactor::default()),
            Some("abcd…".to_string())
        );
        // "é" is two bytes: a cut after 2 bytes would split it.
        assert_eq!(
            parse_cmdline("aéb".as_bytes(), false, 2, &Redactor::default()),
            Some("a…".to_string())
        );
        // The read stopped at its limit: whatever came after is unknown, so it is marked cut.
        assert_eq!(
            parse_cmdline(b"ab\0", true, 10, &Redactor::default()),
            Some("ab…".to_string())
        );
        // Secrets go before the cut, and a URL cut before its '@' keeps only its scheme.
        assert_eq!(
            parse_cmdline(
                b"psql\0--password=hunter2\0db\0",
                false,
                100,
                &Redactor::default()
            ),
            Some("psql --password=*** db".to_string())
        );
        assert_eq!(
            parse_cmdline(b"psql\0postgres://me:hun", true, 100, &Redactor::default()),
            Some("psql postgres://…".to_string())
        );
    }

    #[test]
    fn truncated_comm_is_extended_from_argv0() {
        assert_eq!(
            extend_comm("nvidia-cuda-mps", b"/usr/bin/nvidia-cuda-mps-control\0-d\0"),
            Some("nvidia-cuda-mps-control".to_string())
        );
        // argv[0] that is not the same program (a renamed thread, setproctitle).
        assert_eq!(extend_comm("pt_data_worker0", b"python3\0x.py\0"), None);
    }

    /// Builds a fake /proc tree with one process.
    fn fake_proc(pid: u32, files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3 4\nbtime 1700000000\n")
            .expect("write stat");
        let pdir = dir.path().join(pid.to_string());
        std::fs::create_dir(&pdir).expect("mkdir");
        for (name, content) in files {
            std::fs::write(pdir.join(name), content).expect("write");
        }
        dir
    }

    #[test]
    fn fake_process_all_fields() {
        let tps = procfs::ticks_per_second();
        let stat = format!(
            "77 (a (b) c) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {} 0 0\n",
            5 * tps
        );
        let cgroup = format!("0::/system.slice/docker-{HEX}.scope\n");
        let dir = fake_proc(
            77,
            &[
                ("stat", stat.as_bytes()),
                ("status", b"Name:\ta (b) c\nUid:\t0\t0\t0\t0\n"),
                ("comm", b"a (b) c\n"),
                ("cgroup", cgroup.as_bytes()),
                ("cmdline", b"/opt/a (b) c\0--flag\0"),
            ],
        );
        let mut reader = ProcReader::with_root(dir.path(), Some(1000));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 65);
        let facts = reader.read(77, now);
        assert_eq!(
            facts,
            ProcFacts {
                uid: Some(0),
                username: Some("root".to_string()),
                basename: Some("a (b) c".to_string()),
                started_ms: Some(1_700_000_005_000),
                running_s: Some(60),
                container: container("docker"),
                cmdline: Some("/opt/a (b) c --flag".to_string()),
            }
        );
    }

    #[test]
    fn fake_process_with_a_truncated_comm() {
        let dir = fake_proc(
            9,
            &[
                ("comm", b"nvidia-cuda-mps\n"),
                ("cmdline", b"nvidia-cuda-mps-control\0-d\0"),
            ],
        );
        // Command lines off: argv[0] still completes the name, but no command line is given.
        let facts = ProcReader::with_root(dir.path(), None).read(9, SystemTime::now());
        assert_eq!(facts.basename.as_deref(), Some("nvidia-cuda-mps-control"));
        assert_eq!(facts.cmdline, None);
        // Another user's process: only the readable fields (here comm) are filled.
        assert_eq!(facts.uid, None);
        assert_eq!(facts.started_ms, None);
    }

    #[test]
    fn fake_process_whose_files_are_partly_garbage() {
        let dir = fake_proc(
            5,
            &[
                ("stat", b"garbage"),
                ("status", b"Uid:\tnope\n"),
                ("comm", b"\xffname\n"),
            ],
        );
        let facts = ProcReader::with_root(dir.path(), Some(10)).read(5, SystemTime::now());
        assert_eq!(facts.basename.as_deref(), Some("\u{fffd}name"));
        assert_eq!(facts.uid, None);
        assert_eq!(facts.started_ms, None);
        assert_eq!(facts.running_s, None);
    }

    #[test]
    fn missing_pid_gives_all_none() {
        let mut reader = ProcReader::new(Some(100));
        // Above the kernel's PID_MAX_LIMIT (4194304), so never a live pid.
        let facts = reader.read(4_194_305, SystemTime::now());
        assert_eq!(facts, ProcFacts::default());
    }

    #[test]
    fn later_passes_reuse_facts_until_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let comm_path = format!("/proc/{pid}/comm");
        for _ in 0..200 {
            if std::fs::read(&comm_path).is_ok_and(|b| b.starts_with(b"sleep")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut reader = ProcReader::new(None);
        let t0 = SystemTime::now();
        let first = reader.read_all(&[pid, pid], t0)[&pid].clone();
        assert_eq!(first.basename.as_deref(), Some("sleep"));
        assert!(
            reader.known[&pid].pidfd.is_some(),
            "pidfd expected on Linux 5.3+"
        );

        // A later pass answers from the cache, with the running time moved on.
        let later = reader.read_all(&[pid], t0 + Duration::from_secs(100))[&pid].clone();
        assert_eq!(later.uid, first.uid);
        assert_eq!(later.basename, first.basename);
        assert_eq!(later.running_s, first.running_s.map(|r| r + 100));

        // Once it has exited, the pidfd says so and the pid is read afresh: nothing readable.
        let _ = child.kill();
        let _ = child.wait();
        let gone = reader.read_all(&[pid], SystemTime::now())[&pid].clone();
        assert_eq!(gone, ProcFacts::default());
        assert!(reader.known.is_empty());
    }

    #[test]
    fn a_process_that_changes_user_is_read_again() {
        // Changing a directory's owner needs root (as in CI); elsewhere there is nothing to try.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown the fake /proc/PID");
            return;
        }
        let stat = "12 (setpriv) S 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n";
        let dir = fake_proc(
            12,
            &[
                ("stat", stat.as_bytes()),
                ("status", b"Name:\tsetpriv\nUid:\t0\t0\t0\t0\n"),
            ],
        );
        let mut reader = ProcReader::with_root(dir.path(), None);
        let first = reader.read_all(&[12], SystemTime::now())[&12].clone();
        assert_eq!(first.uid, Some(0));
        // The launcher drops to uid 65534 and execs: same pid, same start time.
        let pdir = dir.path().join("12");
        std::fs::write(
            pdir.join("status"),
            "Name:\tsleep\nUid:\t65534\t65534\t65534\t65534\n",
        )
        .expect("write status");
        std::fs::write(pdir.join("stat"), stat.replace("setpriv", "sleep")).expect("write stat");
        std::os::unix::fs::chown(&pdir, Some(65534), Some(65534)).expect("chown");
        let later = reader.read_all(&[12], SystemTime::now())[&12].clone();
        assert_eq!(later.uid, Some(65534), "the new owner, not the cached root");
        assert_eq!(later.basename.as_deref(), Some("sleep"));
    }

    #[test]
    fn real_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        // Until execve has set up the new argv the command line reads empty; wait that out.
        let cmdline_path = format!("/proc/{}/cmdline", child.id());
        for _ in 0..200 {
            if std::fs::read(&cmdline_path).is_ok_and(|b| b.starts_with(b"sleep")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut reader = ProcReader::new(Some(100));
        let facts = reader.read(child.id(), SystemTime::now());
        let _ = child.kill();
        let _ = child.wait();

        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(facts.uid, Some(uid));
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .expect("getpwuid")
            .map(|u| u.name);
        assert_eq!(facts.username, me);
        assert_eq!(facts.basename.as_deref(), Some("sleep"));
        assert_eq!(facts.cmdline.as_deref(), Some("sleep 30"));
        let running = facts.running_s.expect("running_s");
        assert!(running < 10, "running_s = {running}");
        let started = facts.started_ms.expect("started_ms");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        // Boot time is whole seconds, so allow a little either way.
        assert!(started <= now_ms + 2000 && now_ms - started < 10_000);
    }
}
