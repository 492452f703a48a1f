//! `hmonitor free | wait | status | hold | release`: what lab members type on a GPU host. The
//! running agent answers (over its socket, which tells it who asks) and coordinates holds;
//! cluster-wide questions go through it to the hub, or straight to the hub named in
//! `~/.config/hmonitor/cli.toml` / `HMON_HUB` where no agent runs. Without an agent, `free`
//! and `wait` read NVML themselves and say that holds are not coordinated.
//!
//! Exit codes: 0 done, 1 an error (or nothing free for `free`), 2 `wait` timed out.

pub mod client;
pub mod hub;
pub mod show;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use hmonitor_common::free::{
    self, parse_percent, parse_settle, Criteria, GpuRow, Query, DEFAULT_MAX_UTIL, DEFAULT_SETTLE,
};
use hmonitor_common::parse::{parse_bytes, parse_span};
use hmonitor_sampler::Sampler;
use serde::Deserialize;

use crate::config::Args;
use crate::coord::wire::{Reply, Request};
use client::{ClientError, Conn};

/// What a free GPU must be (shared by `free`, `wait` and `hold`).
#[derive(Debug, Clone, clap::Args)]
pub struct Want {
    /// At least this much memory free on each GPU, e.g. 20GiB, 40G.
    #[arg(long, value_parser = parse_bytes, value_name = "SIZE")]
    pub min_mem: Option<u64>,
    /// Utilization at most this, percent [default: 5].
    #[arg(long, value_parser = parse_percent, value_name = "PCT")]
    pub max_util: Option<u32>,
    /// Memory in use under which a GPU counts as unused [default: 1GiB].
    #[arg(long, value_parser = parse_bytes, value_name = "SIZE")]
    pub free_mem: Option<u64>,
    /// Only GPUs whose name contains this (any case), e.g. A100, "H200".
    #[arg(long, value_name = "TEXT")]
    pub model: Option<String>,
    /// Utilization must have stayed low this long, judged from samples the agent holds
    /// already, e.g. 30s, 0 [default: 30s].
    #[arg(long, value_parser = parse_settle, value_name = "DURATION")]
    pub settle: Option<Duration>,
    /// Your own processes (and holds) do not make a GPU busy.
    #[arg(long)]
    pub mine_ok: bool,
}

impl Want {
    fn criteria(&self) -> Criteria {
        let d = Criteria::default();
        Criteria {
            min_mem: self.min_mem.unwrap_or(d.min_mem),
            max_util: self.max_util.unwrap_or(DEFAULT_MAX_UTIL),
            free_mem: self.free_mem.unwrap_or(d.free_mem),
            settle: self.settle.unwrap_or(DEFAULT_SETTLE),
            model: self.model.clone(),
            caller: None,
            mine_ok: self.mine_ok,
        }
    }

    fn query(&self, count: usize) -> Query {
        Query {
            criteria: self.criteria(),
            free_only: false,
            host: None,
            user: None,
            count,
            states: Vec::new(),
        }
    }
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=hmonitor_proto::limits::MAX_GPUS).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a GPU count (1 to 128)")),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("timeout {s:?} is longer than a year"));
    }
    Ok(d)
}

fn parse_hold(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d.is_zero() || d > crate::coord::MAX_HOLD {
        return Err(format!("hold {s:?} must be more than 0 and at most 24h"));
    }
    Ok(d)
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The GPUs free now, best first, and a ready CUDA_VISIBLE_DEVICES line.
    Free {
        /// How many GPUs you need (the line names the best N).
        #[arg(long, default_value = "1", value_parser = parse_count)]
        count: usize,
        #[command(flatten)]
        want: Want,
        /// Ask the hub about every host, not only this one.
        #[arg(long)]
        anywhere: bool,
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Wait until N GPUs of this host are free, hold them, then run CMD on them.
    Wait {
        #[arg(long, default_value = "1", value_parser = parse_count)]
        count: usize,
        #[command(flatten)]
        want: Want,
        /// Give up after this long (exit 2), e.g. 30m [default: wait forever].
        #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
        timeout: Option<Duration>,
        /// How long the GPUs stay held for you if your job does not show up on them, e.g. 10m.
        #[arg(long, default_value = "10m", value_parser = parse_hold, value_name = "DURATION")]
        hold: Duration,
        /// Wait for GPUs on any host (asks the hub; prints the host and GPUs, holds nothing).
        #[arg(long)]
        anywhere: bool,
        /// Do not wait here: have the hub tell you (at your contacts in its [users]) once,
        /// when the GPUs are free; --timeout is how long it keeps watching [default: 4h].
        #[arg(long, conflicts_with = "cmd")]
        notify: bool,
        /// Command to run with CUDA_VISIBLE_DEVICES set (after `--`).
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// The cluster: one line per GPU with its state, memory, utilization and users.
    Status {
        /// Only hosts whose id contains this.
        #[arg(long)]
        host: Option<String>,
        /// Only GPUs this user has a process on (or holds).
        #[arg(long)]
        user: Option<String>,
        /// Only free GPUs.
        #[arg(long)]
        free: bool,
        #[arg(long)]
        json: bool,
        /// Refresh every 2 s until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Hold GPUs of this host by hand (the named ones, else the best N free).
    Hold {
        /// GPU indexes or UUIDs.
        gpus: Vec<String>,
        #[arg(long, default_value = "1", value_parser = parse_count)]
        count: usize,
        #[command(flatten)]
        want: Want,
        #[arg(long, default_value = "10m", value_parser = parse_hold, value_name = "DURATION")]
        hold: Duration,
        #[arg(long)]
        json: bool,
    },
    /// End your holds (on the named GPUs, else all of yours on this host).
    Release {
        /// GPU indexes or UUIDs.
        gpus: Vec<String>,
    },
}

fn now_ms() -> u64 {
    hmonitor_proto::unix_ms(std::time::SystemTime::now())
}

fn print(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Runs a subcommand; the exit code says how it went.
pub async fn run(args: &Args, cmd: &Command) -> anyhow::Result<ExitCode> {
    let socket = args.cli_socket();
    match cmd {
        Command::Free {
            count,
            want,
            anywhere,
            json,
        } => free_cmd(args, &socket, *count, want, *anywhere, *json).await,
        Command::Wait {
            count,
            want,
            timeout,
            hold,
            anywhere,
            notify,
            cmd,
        } => {
            if *notify {
                return notify_me(&socket, *count, want, *timeout, *anywhere).await;
            }
            if *anywhere {
                if !cmd.is_empty() {
                    bail!("--anywhere finds GPUs on other hosts: it cannot run CMD here");
                }
                return wait_anywhere(args, &socket, *count, want, *timeout).await;
            }
            wait_cmd(args, &socket, *count, want, *timeout, *hold, cmd).await
        }
        Command::Status {
            host,
            user,
            free,
            json,
            watch,
        } => {
            let q = Query {
                criteria: Criteria::default(),
                free_only: *free,
                host: host.clone(),
                user: user.clone(),
                count: 0,
                states: Vec::new(),
            };
            loop {
                let rows = match cluster(args, &socket, &q).await {
                    Ok(rows) => rows,
                    Err(e) if *watch => {
                        eprintln!("hmonitor: {e:#}; asking again in 2 s");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if rows.is_empty() && !*json {
                    eprintln!("hmonitor: no GPU matches");
                }
                let text = if *json {
                    show::json(&rows)?
                } else {
                    show::table(&rows, show::colour(), now_ms())
                };
                if !*watch {
                    print(&text)?;
                    return Ok(ExitCode::SUCCESS);
                }
                // Clear the screen on a terminal; elsewhere one block per refresh.
                let clear = if show::colour() {
                    "\x1b[H\x1b[2J"
                } else {
                    "\n"
                };
                print(&format!("{clear}{text}"))?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Command::Hold {
            gpus,
            count,
            want,
            hold,
            json,
        } => {
            let req = Request::Hold {
                query: want.query(*count).to_query_string(),
                mine_ok: want.mine_ok,
                count: *count,
                gpus: gpus.clone(),
                hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            };
            let reply = agent(&socket, &req).await?;
            if *json {
                print(&show::json(&reply.gpus)?)?;
            } else {
                print(&show::table(&reply.gpus, show::colour(), now_ms()))?;
                print(&format!("{}\n", show::visible_devices(&reply.gpus)))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Release { gpus } => {
            let reply = agent(&socket, &Request::Release { gpus: gpus.clone() }).await?;
            let ids: Vec<String> = reply.released.iter().map(ToString::to_string).collect();
            if ids.is_empty() {
                eprintln!("hmonitor: you hold no GPU on this host");
            } else {
                eprintln!("hmonitor: released GPU(s) {}", ids.join(","));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One request to the running agent (for what only an agent can do).
async fn agent(socket: &Path, req: &Request) -> anyhow::Result<Reply> {
    match Conn::ask(socket, req).await {
        Ok(r) => Ok(r),
        Err(e @ ClientError::NoAgent { .. }) => bail!(
            "{e}: holds need the running agent (start it with its systemd unit, or point \
             --socket/HMON_SOCKET at its socket)"
        ),
        Err(e) => Err(e.into()),
    }
}

fn warn_alone(socket: &Path, why: &str) {
    eprintln!(
        "hmonitor: no agent runs on this host ({why} at {}): reading NVML directly; holds are \
         not coordinated on this host",
        socket.display()
    );
}

/// This host's GPUs judged for `want`, from the agent, or from NVML when none runs (then the
/// settle time cannot be judged: there are no earlier samples).
async fn this_host(
    args: &Args,
    socket: &Path,
    want: &Want,
    count: usize,
) -> anyhow::Result<(Vec<GpuRow>, String)> {
    let req = Request::Free {
        query: want.query(count).to_query_string(),
        mine_ok: want.mine_ok,
    };
    match Conn::ask(socket, &req).await {
        Ok(reply) => Ok((reply.gpus, reply.note)),
        Err(ClientError::NoAgent { why, .. }) => {
            warn_alone(socket, &why);
            let mut c = want.criteria();
            if !c.settle.is_zero() {
                eprintln!("hmonitor: the settle time is not judged: one sample is all there is");
                c.settle = Duration::ZERO;
            }
            c.caller = Some(i32::try_from(nix::unistd::getuid().as_raw()).unwrap_or(i32::MAX));
            let info = sample_once(args).await?;
            let mut rows = free::rows(&info.id, &info, true, None, now_ms(), &c);
            free::rank(&mut rows);
            rows.sort_by_key(|r| !r.is_free());
            let note = if rows.is_empty() {
                info.err
            } else {
                String::new()
            };
            Ok((rows, note))
        }
        Err(e) => Err(e.into()),
    }
}

async fn sample_once(args: &Args) -> anyhow::Result<hmonitor_proto::HostInfo> {
    let cfg = args.sampler_config();
    let within = crate::server::first_sample_within(cfg.stale_after);
    let sampler = Sampler::start(cfg).context("cannot start the sampling threads")?;
    sampler.ready(within).await;
    Ok(sampler.report_raw())
}

fn check_count(count: usize, rows: &[GpuRow], note: &str) -> anyhow::Result<()> {
    if rows.is_empty() {
        let why = if note.is_empty() { "" } else { ": " };
        bail!("this host reports no GPU{why}{note}");
    }
    if count > rows.len() {
        bail!(
            "this host has {} GPUs; --count {count} can never be met",
            rows.len()
        );
    }
    Ok(())
}

/// Why each GPU that is not free is not, for a caller who found too few.
fn explain(rows: &[GpuRow]) {
    for r in rows.iter().filter(|r| !r.is_free()) {
        eprintln!(
            "  GPU {} ({}): {}: {}",
            r.index,
            r.uuid,
            r.state.as_str(),
            r.reason
        );
    }
}

async fn free_cmd(
    args: &Args,
    socket: &Path,
    count: usize,
    want: &Want,
    anywhere: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if anywhere {
        let mut q = want.query(count);
        q.free_only = true;
        let rows = cluster(args, socket, &q).await?;
        if json {
            print(&show::json(&rows)?)?;
        } else {
            print(&show::table(&rows, show::colour(), now_ms()))?;
            if let Some(line) = best_host_line(&rows, count) {
                print(&line)?;
            }
        }
        if rows.is_empty() {
            eprintln!("hmonitor: no host has {count} free GPU(s)");
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (rows, note) = this_host(args, socket, want, count).await?;
    check_count(count, &rows, &note)?;
    let free: Vec<GpuRow> = rows.iter().filter(|r| r.is_free()).cloned().collect();
    if json {
        print(&show::json(&free)?)?;
    } else {
        print(&show::table(&free, show::colour(), now_ms()))?;
        if free.len() >= count {
            print(&format!("{}\n", show::visible_devices(&free[..count])))?;
        }
    }
    if free.len() < count {
        eprintln!(
            "hmonitor: {} of the {count} GPU(s) asked for are free",
            free.len()
        );
        explain(&rows);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn timed_out(count: usize, after: Duration) -> anyhow::Result<ExitCode> {
    eprintln!(
        "hmonitor: timed out: {count} GPU(s) did not become free within {}",
        humantime_span(after)
    );
    Ok(ExitCode::from(2))
}

fn humantime_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s < 120 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

#[allow(clippy::too_many_arguments)]
async fn wait_cmd(
    args: &Args,
    socket: &Path,
    count: usize,
    want: &Want,
    timeout: Option<Duration>,
    hold: Duration,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let mut conn = match Conn::open(socket).await {
        Ok(c) => c,
        Err(ClientError::NoAgent { why, .. }) => {
            warn_alone(socket, &why);
            return wait_alone(args, count, want, timeout, cmd).await;
        }
        Err(e) => return Err(e.into()),
    };
    conn.send(&Request::Wait {
        query: want.query(count).to_query_string(),
        mine_ok: want.mine_ok,
        count,
        hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
    })
    .await?;
    // Nothing is polled here: the agent answers on the sample in which the GPUs are free.
    // Leaving (timeout, Ctrl-C) closes the connection, which ends the wait and its holds.
    let reply = match timeout {
        Some(t) => match tokio::time::timeout(t, conn.reply()).await {
            Ok(r) => r?,
            Err(_) => return timed_out(count, t),
        },
        None => conn.reply().await?,
    };
    conn.send(&Request::Started).await?;
    conn.reply().await?;
    let code = start(&reply.gpus, cmd)?;
    if code != ExitCode::SUCCESS {
        // CMD could not be started: the GPUs are not the caller's to keep.
        let gpus = reply.gpus.iter().map(|g| g.uuid.clone()).collect();
        if let Err(e) = Conn::ask(socket, &Request::Release { gpus }).await {
            eprintln!("hmonitor: cannot release the GPUs: {e}");
        }
    }
    Ok(code)
}

/// Where no agent runs: sample NVML every interval until enough GPUs are free (the settle
/// time judged from the samples taken while waiting).
async fn wait_alone(
    args: &Args,
    count: usize,
    want: &Want,
    timeout: Option<Duration>,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let cfg = args.sampler_config();
    let interval = cfg.interval;
    let mut sampler = Sampler::start(cfg).context("cannot start the sampling threads")?;
    let mut recent = free::Recent::new(interval);
    let mut c = want.criteria();
    c.caller = Some(i32::try_from(nix::unistd::getuid().as_raw()).unwrap_or(i32::MAX));
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    loop {
        let info = sampler.report_raw();
        let now = now_ms();
        recent.push(now, &info.gpus, info.stale);
        if !info.gpus.is_empty() {
            let mut rows = free::rows(&info.id, &info, true, Some(&recent), now, &c);
            check_count(count, &rows, &info.err)?;
            free::rank(&mut rows);
            let free: Vec<GpuRow> = rows
                .into_iter()
                .filter(GpuRow::is_free)
                .take(count)
                .collect();
            if free.len() == count {
                return start(&free, cmd);
            }
        }
        let next = sampler.changed();
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, next).await.is_err() {
                    return timed_out(count, timeout.unwrap_or_default());
                }
            }
            None => {
                next.await;
            }
        }
    }
}

/// Runs CMD on the GPUs (the process becomes CMD, so its exit code and signals are the
/// job's), or prints the line.
fn start(gpus: &[GpuRow], cmd: &[OsString]) -> anyhow::Result<ExitCode> {
    let line = show::visible_devices(gpus);
    let Some((program, rest)) = cmd.split_first() else {
        print(&format!("{line}\n"))?;
        return Ok(ExitCode::SUCCESS);
    };
    let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    eprintln!("hmonitor: {line}");
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(program)
        .args(rest)
        .env("CUDA_VISIBLE_DEVICES", uuids.join(","))
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        .exec();
    eprintln!("hmonitor: cannot run {program:?}: {err}");
    Ok(ExitCode::from(127))
}

/// `host: CUDA_VISIBLE_DEVICES=…` for the best `count` free GPUs of the host holding the best
/// one (`rows`: free GPUs of hosts with `count` free, best first).
fn best_host_line(rows: &[GpuRow], count: usize) -> Option<String> {
    let best = rows.first()?;
    let host: Vec<GpuRow> = rows
        .iter()
        .filter(|r| r.host == best.host)
        .take(count)
        .cloned()
        .collect();
    Some(format!("{}: {}\n", best.host, show::visible_devices(&host)))
}

/// `wait --notify`: a gpus_free subscription at the hub, through the agent (which says who
/// asks); the hub tells the caller once, at their contacts.
async fn notify_me(
    socket: &Path,
    count: usize,
    want: &Want,
    timeout: Option<Duration>,
    anywhere: bool,
) -> anyhow::Result<ExitCode> {
    let expires = timeout.unwrap_or(Duration::from_secs(4 * 3600));
    let params = serde_json::json!({
        "count": count,
        "min_mem": want.min_mem.unwrap_or(0),
        "anywhere": anywhere,
        "expires_s": expires.as_secs().max(1),
    })
    .to_string();
    let reply = Conn::ask(socket, &Request::Notify { params }).await?;
    let made: serde_json::Value = serde_json::from_str(&reply.body)
        .with_context(|| format!("the hub's answer is not JSON: {}", reply.body))?;
    let contacts: Vec<&str> = made["contacts"]
        .as_array()
        .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let size = want
        .min_mem
        .map(|m| {
            format!(
                " with at least {} free",
                hmonitor_common::free::human_bytes(m)
            )
        })
        .unwrap_or_default();
    let place = if anywhere {
        "on any host".to_owned()
    } else {
        format!("on {}", reply.host)
    };
    print(&format!(
        "You will be told once, at {}, when {count} GPU{}{size} {} free {place} (subscription {}, for {}).",
        if contacts.is_empty() { "your contacts".to_owned() } else { contacts.join(", ") },
        if count == 1 { "" } else { "s" },
        if count == 1 { "is" } else { "are" },
        made["id"],
        humantime::format_duration(expires),
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_anywhere(
    args: &Args,
    socket: &Path,
    count: usize,
    want: &Want,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let mut q = want.query(count);
    q.free_only = true;
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut said = String::new();
    loop {
        // A refused or lost question (the host's users ask too often, the hub connection is
        // being re-made) is asked again at the next round, said once.
        let rows = match cluster(args, socket, &q).await {
            Ok(rows) => rows,
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != said {
                    eprintln!("hmonitor: {msg}; asking again");
                    said = msg;
                }
                Vec::new()
            }
        };
        if let Some(line) = best_host_line(&rows, count) {
            print(&line)?;
            return Ok(ExitCode::SUCCESS);
        }
        // The hub has each host's latest frame; asking once per default interval follows it.
        let pause = Duration::from_secs(2);
        if deadline.is_some_and(|d| tokio::time::Instant::now() + pause > d) {
            return timed_out(count, timeout.unwrap_or_default());
        }
        tokio::time::sleep(pause).await;
    }
}

#[derive(Deserialize)]
struct Answer {
    gpus: Vec<GpuRow>,
}

/// The cluster's GPUs for `q`: relayed by the local agent, else straight from the hub.
async fn cluster(args: &Args, socket: &Path, q: &Query) -> anyhow::Result<Vec<GpuRow>> {
    let params = q.to_query_string();
    let relayed = Conn::ask(
        socket,
        &Request::Cluster {
            params: params.clone(),
        },
    )
    .await;
    let body = match relayed {
        Ok(reply) => reply.body.into_bytes(),
        Err(ClientError::Refused(why))
            if why == crate::push::RelayError::NoHub.to_string() && cli_hub(args)?.is_none() =>
        {
            // An agent that pushes nowhere (pull API only): this host is all it knows.
            eprintln!("hmonitor: the agent here pushes to no hub: showing this host only");
            let want = Want {
                min_mem: Some(q.criteria.min_mem),
                max_util: Some(q.criteria.max_util),
                free_mem: Some(q.criteria.free_mem),
                model: q.criteria.model.clone(),
                settle: Some(q.criteria.settle),
                mine_ok: false,
            };
            let (rows, _) = this_host(args, socket, &want, 0).await?;
            let mut rows: Vec<GpuRow> = rows.into_iter().filter(|r| q.keeps(r)).collect();
            rows.sort_by_key(|r| r.index);
            return Ok(rows);
        }
        Err(e) => match cli_hub(args)? {
            Some(t) => hub::get(&t, &format!("/api/gpus?{params}"))
                .await
                .map_err(anyhow::Error::msg)?,
            None => bail!(
                "{e}; and no hub is configured for the CLI (set HMON_HUB and \
                     HMON_VIEWER_TOKEN, or hub = \"http://…\" in {})",
                hub::config_path().map_or_else(
                    || "~/.config/hmonitor/cli.toml".into(),
                    |p| p.display().to_string()
                )
            ),
        },
    };
    let answer: Answer =
        serde_json::from_slice(&body).context("the hub's answer is not the /api/gpus JSON")?;
    Ok(answer.gpus)
}

/// The hub the CLI asks itself (cli.toml, `HMON_HUB`), if one is configured.
fn cli_hub(args: &Args) -> anyhow::Result<Option<hub::HubTarget>> {
    let hub_env = args.hubs().first().map(ToString::to_string);
    hub::target(hub_env, args.tls.client()).map_err(anyhow::Error::msg)
}
