//! The agent's state directory (`HMON_STATE_DIR`, systemd's `$STATE_DIRECTORY`): what must
//! survive a restart. For now that is the host id, so that the hub keeps knowing a machine as
//! the same host after it is renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file holding the host id inside the state directory.
pub const HOST_ID_FILE: &str = "host-id";

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
fn write_atomically(dir: &Path, path: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // The pid keeps two agents started on the same directory from writing the same temp file;
    // the last rename wins and both ids are the hostname anyway.
    let tmp = dir.join(format!(".{HOST_ID_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
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
