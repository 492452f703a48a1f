//! The CLI's side of the agent's socket: one request, its replies, as JSON lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::coord::wire::{Reply, Request, MAX_REPLY_BYTES};

/// How long one question to the agent may take (a relayed one waits up to 15 s for the hub).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent runs here (no socket, or nobody listens on it): the CLI works alone.
    #[error("no agent listens on {} ({why})", path.display())]
    NoAgent { path: PathBuf, why: String },
    #[error(
        "permission denied on {}: the agent's socket must be writable by every user (mode \
         0666, in a directory others may enter); ask the host's admin",
        path.display()
    )]
    Permission { path: PathBuf },
    #[error("the agent at {} {why}", path.display())]
    Broken { path: PathBuf, why: String },
    #[error("the agent says: {0}")]
    Refused(String),
}

/// One connection to the agent.
pub struct Conn {
    path: PathBuf,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Conn {
    pub async fn open(path: &Path) -> Result<Self, ClientError> {
        match UnixStream::connect(path).await {
            Ok(s) => {
                let (r, w) = s.into_split();
                Ok(Self {
                    path: path.to_owned(),
                    r: BufReader::new(r),
                    w,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(ClientError::Permission {
                    path: path.to_owned(),
                })
            }
            Err(e) => Err(ClientError::NoAgent {
                path: path.to_owned(),
                why: e.to_string(),
            }),
        }
    }

    fn broken(&self, why: impl Into<String>) -> ClientError {
        ClientError::Broken {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| self.broken(e.to_string()))?;
        line.push(b'\n');
        self.w
            .write_all(&line)
            .await
            .map_err(|e| self.broken(format!("closed the connection: {e}")))
    }

    /// The next reply; an error reply becomes [`ClientError::Refused`].
    pub async fn reply(&mut self) -> Result<Reply, ClientError> {
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_REPLY_BYTES + 1).unwrap_or(u64::MAX);
        let n = (&mut self.r)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| self.broken(format!("failed: {e}")))?;
        if n == 0 {
            return Err(self.broken("closed the connection without an answer"));
        }
        let reply: Reply = serde_json::from_slice(&buf)
            .map_err(|e| self.broken(format!("sent something unreadable: {e}")))?;
        if !reply.ok {
            return Err(ClientError::Refused(reply.error));
        }
        Ok(reply)
    }

    /// Sends `req` and reads its one reply, within [`ASK_TIMEOUT`] (a hung agent does not
    /// hang its users' scripts).
    pub async fn ask(path: &Path, req: &Request) -> Result<Reply, ClientError> {
        let mut c = Self::open(path).await?;
        c.send(req).await?;
        match tokio::time::timeout(ASK_TIMEOUT, c.reply()).await {
            Ok(r) => r,
            Err(_) => Err(c.broken(format!("did not answer within {ASK_TIMEOUT:?}"))),
        }
    }
}
