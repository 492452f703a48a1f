//! The enrollment token kept in the data directory: when no token of any kind is configured,
//! agents must still authenticate (secure by default), so the hub reads the token stored in
//! `<data_dir>/enrollment-token`, or generates and stores one on first start.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An enrollment token generated on this start (none was configured and none was stored).
pub struct GeneratedToken {
    pub token: String,
    /// Where it was stored (`<data_dir>/enrollment-token`, mode 0600).
    pub path: PathBuf,
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedToken")
            .field("token", &"<redacted>")
            .field("path", &self.path)
            .finish()
    }
}

impl GeneratedToken {
    /// The first-start instruction: how to point an agent at this hub. Holds the token; meant
    /// for stdout once, never for the log.
    pub fn add_host_hint(&self, listen: SocketAddr) -> String {
        let host = if listen.ip().is_unspecified() {
            "<this host>".to_owned()
        } else if listen.is_ipv6() {
            format!("[{}]", listen.ip())
        } else {
            listen.ip().to_string()
        };
        format!(
            "No token was configured, so an enrollment token was generated and stored in {}.\n\
             To add a host, run on it:\n\n    \
             HMON_HUB=ws://{host}:{port}/api/agent HMON_TOKEN={token} hmonitor\n",
            self.path.display(),
            port = listen.port(),
            token = self.token,
        )
    }
}

/// Name of the generated enrollment token's file inside the data directory.
pub const TOKEN_FILE: &str = "enrollment-token";

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// Why the stored token could not be used or made.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("data directory {}: {source}", path.display())]
    DataDir { path: PathBuf, source: io::Error },
    #[error("enrollment token file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// The token of `<data_dir>/enrollment-token`, and whether it was generated now.
#[derive(Debug)]
pub enum StoredToken {
    /// Read from the file an earlier start (or another hub on this directory) wrote.
    Read {
        token: String,
        path: PathBuf,
    },
    Generated(GeneratedToken),
}

impl StoredToken {
    pub fn token(&self) -> &str {
        match self {
            Self::Read { token, .. } => token,
            Self::Generated(g) => &g.token,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } => path,
            Self::Generated(g) => &g.path,
        }
    }
}

/// The token stored in `<data_dir>/enrollment-token`, generated and stored (mode 0600) when
/// there is none yet.
pub fn ensure(data_dir: &Path) -> Result<StoredToken, EnrollmentError> {
    ensure_named(data_dir, TOKEN_FILE)
}

/// Name of the generated admin token's file inside the data directory (`hmonitor-hub hosts`
/// reads it from there when it runs on the hub's machine).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The token of `<data_dir>/<name>`, generated and stored (mode 0600) when there is none yet.
pub fn ensure_named(data_dir: &Path, name: &str) -> Result<StoredToken, EnrollmentError> {
    let path = data_dir.join(name);
    if let Some(token) = read_token_file(&path)? {
        return Ok(StoredToken::Read { token, path });
    }
    std::fs::create_dir_all(data_dir).map_err(|source| EnrollmentError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let token = random_token()?;
    let file_err = |e: io::Error| EnrollmentError::TokenFile {
        path: path.clone(),
        reason: e.to_string(),
    };
    // create_new: two hubs started at once on one data directory must not each write a token;
    // the loser reads the winner's.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return match read_token_file(&path)? {
                Some(token) => Ok(StoredToken::Read { token, path }),
                None => Err(EnrollmentError::TokenFile {
                    path,
                    reason: "vanished while being read".into(),
                }),
            };
        }
        Err(e) => return Err(file_err(e)),
    };
    if let Err(e) = file
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
    {
        // A half-written token file would be reused on the next start: remove it.
        let _ = std::fs::remove_file(&path);
        return Err(file_err(e));
    }
    Ok(StoredToken::Generated(GeneratedToken { token, path }))
}

/// The stored token; `None` when there is no file.
pub fn read_token_file(path: &Path) -> Result<Option<String>, EnrollmentError> {
    hmonitor_common::auth::read_token_file(path).map_err(|reason| {
        let reason = if reason == "is empty" {
            "is empty; delete it to have a new token generated".to_owned()
        } else {
            reason
        };
        EnrollmentError::TokenFile {
            path: path.to_owned(),
            reason,
        }
    })
}

fn random_token() -> Result<String, EnrollmentError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| EnrollmentError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
