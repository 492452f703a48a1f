//! The agent's state directory (`HMON_STATE_DIR`, systemd's `$STATE_DIRECTORY`): what must
//! survive a restart: the host id, so that the hub keeps knowing a machine as the same host
//! after it is renamed, and the host key, which pins that id to this agent at the hub.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file holding the host id inside the state directory.
pub const HOST_ID_FILE: &str = "host-id";

/// Name of the file holding the host key (64 hex digits, mode 0600).
pub const HOST_KEY_FILE: &str = "host-key";

/// Longest host id accepted from the file: a DNS name's limit. Anything longer is not an id the
/// agent wrote, and sending it in every frame would be a waste.
const HOST_ID_MAX: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The I/O error is part of the message rather than a `source`: printed with its chain
    // (`{:#}`), it would otherwise appear twice.
    #[error("cannot read {}: {err}", .path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot keep the host id in {}: {err}", .path.display())]
    Write { path: PathBuf, err: std::io::Error },
    #[error("{} does not hold a host id ({why}); fix or remove it", .path.display())]
    BadHostId { path: PathBuf, why: &'static str },
    #[error("no host id to keep: the hostname is empty; set HMON_ID")]
    NoHostname,
    #[error("{} does not hold a host key (64 hex digits); remove it to make a new one, then have the hub's admin run `hmonitor-hub hosts forget ID`", .path.display())]
    BadHostKey { path: PathBuf },
    #[error("cannot make a host key: no random bytes from the operating system: {0}")]
    Random(String),
}

/// The host key kept in `dir/host-key`, made on first start. With the shared enrollment
/// token, the hub pins the host id to the first key it sees: an agent that loses this file
/// is refused its id until an admin forgets the host.
pub fn host_key(dir: &Path) -> Result<[u8; hmonitor_common::auth::HOST_KEY_LEN], StateError> {
    let path = dir.join(HOST_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => return parse_host_key(&bytes).ok_or(StateError::BadHostKey { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StateError::Read { path, err }),
    }
    let mut key = [0u8; hmonitor_common::auth::HOST_KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| StateError::Random(e.to_string()))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write_atomically(dir, &path, &hex).map_err(|err| StateError::Write {
        path: path.clone(),
        err,
    })?;
    tracing::info!("host key made and kept in {}", path.display());
    Ok(key)
}

fn parse_host_key(bytes: &[u8]) -> Option<[u8; hmonitor_common::auth::HOST_KEY_LEN]> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 2 * hmonitor_common::auth::HOST_KEY_LEN {
        return None;
    }
    let mut key = [0u8; hmonitor_common::auth::HOST_KEY_LEN];
    for (i, out) in key.iter_mut().enumerate() {
        *out = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The host id kept in `dir`: read from `dir/host-id`, or, on first start, created there from
/// `hostname` and kept from then on. The directory is created if missing.
pub fn host_id(dir: &Path, hostname: &str) -> Result<String, StateError> {
    let path = dir.join(HOST_ID_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if let Some(id) = parse_host_id(&bytes).map_err(|why| StateError::BadHostId {
                path: path.clone(),
                why,
            })? {
                return Ok(id);
            }
            // An empty file is what a crash between create and write leaves behind with a
            // non-atomic writer (or `touch`): there is no id to keep, so make one.
            tracing::warn!("{} is empty; writing a new host id", path.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StateError::Read { path, err }),
    }
    let id = hostname.trim();
    if id.is_empty() {
        return Err(StateError::NoHostname);
    }
    write_atomically(dir, &path, id).map_err(|err| StateError::Write {
        path: path.clone(),
        err,
    })?;
    tracing::info!("host id {id:?} kept in {}", path.display());
    Ok(id.to_owned())
}

/// The id in a host-id file: its first line, trimmed; `None` when the file is blank.
fn parse_host_id(bytes: &[u8]) -> Result<Option<String>, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(id) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err("more than one line");
    }
    if id.len() > HOST_ID_MAX {
        return Err("longer than 253 bytes");
    }
    if id.chars().any(char::is_control) {
        return Err("control characters");
    }
    Ok(Some(id.to_owned()))
}

/// Writes `id` to `path` so that a reader (or a crash) sees either no file or the whole id:
/// write a temporary file in the same directory, sync it, rename it over, sync the directory.
/// Mode 0600: the host key is a secret, and the id is nobody else's business to change.
fn write_atomically(dir: &Path, path: &Path, id: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| HOST_ID_FILE.into(), |n| n.to_string_lossy().into_owned());
    // The pid keeps two agents started on the same directory from writing the same temp file;
    // the last rename wins.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_the_id_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nested/state");
        assert_eq!(host_id(&state, "gpu-01\n").expect("create"), "gpu-01");
        let written = std::fs::read_to_string(state.join(HOST_ID_FILE)).expect("read");
        assert_eq!(written, "gpu-01\n");
        // Renamed machine: the kept id wins.
        assert_eq!(host_id(&state, "gpu-99").expect("read"), "gpu-01");
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(&state)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(HOST_ID_FILE)]);
    }

    #[test]
    fn a_hand_written_id_is_used_and_a_blank_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(HOST_ID_FILE), "  lab-07  \n\n").expect("write");
        assert_eq!(host_id(dir.path(), "other").expect("read"), "lab-07");
        std::fs::write(dir.path().join(HOST_ID_FILE), "\n").expect("write");
        assert_eq!(host_id(dir.path(), "other").expect("read"), "other");
    }

    #[test]
    fn the_host_key_is_made_once_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = host_key(dir.path()).expect("make");
        assert_eq!(host_key(dir.path()).expect("read"), first);
        let meta = std::fs::metadata(dir.path().join(HOST_KEY_FILE)).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(host_key(other.path()).expect("make"), first);
        std::fs::write(dir.path().join(HOST_KEY_FILE), "not hex\n").expect("write");
        let err = host_key(dir.path()).expect_err("garbled").to_string();
        assert!(err.contains("host-key") && err.contains("forget"), "{err}");
    }

    #[test]
    fn a_garbled_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(HOST_ID_FILE), "a\nb\n").expect("write");
        let err = host_id(dir.path(), "h").expect_err("two lines").to_string();
        assert!(
            err.contains("host-id") && err.contains("more than one line"),
            "{err}"
        );
        std::fs::write(dir.path().join(HOST_ID_FILE), [0xff, 0xfe]).expect("write");
        assert!(host_id(dir.path(), "h").is_err());
        assert!(matches!(
            host_id(&dir.path().join("new"), " "),
            Err(StateError::NoHostname)
        ));
    }
}
