//! The agent's Unix socket for the CLI (`/run/hmonitor/agent.sock` by default, in the unit's
//! `RuntimeDirectory`). Anyone on the host may connect (mode 0666): who asks is the uid the
//! kernel reports for the connection (`SO_PEERCRED`), never a name the client sends, and what
//! each may do follows from it (only a hold's holder, or root, ends it).
//!
//! Requests are bounded: one line of at most 64 KiB, read within 10 s; at most 512
//! connections at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hmonitor_common::free::{Criteria, Query};
use hmonitor_sampler::Sampler;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::wire::{Reply, Request, MAX_REQUEST_BYTES};
use super::{Caller, Coordinator};
use crate::push::{Relay, RelayError};

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 512;
/// Connections one uid may have open at once: one user cannot take every slot.
const MAX_PER_UID: usize = 64;
/// How long a reply may take to be read by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a relayed cluster question may take.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the CLI socket {}: {source}", path.display())]
pub struct SocketError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Binds `path`, replacing a socket file nobody listens on (left by a crash), and lets every
/// user connect.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let fail = |source| SocketError {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent listens on it",
            )));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    Ok(listener)
}

/// What each connection needs.
#[derive(Clone)]
pub struct Ctx {
    pub coord: Arc<Coordinator>,
    pub sampler: Sampler,
    /// None: the agent does not push to a hub.
    pub relay: Option<Arc<Relay>>,
}

/// Serves connections until `stop` completes; the socket file is removed at the end.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    ctx: Ctx,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_uid: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>> = Arc::default();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("CLI socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Dropped: the client sees the connection end.
            continue;
        };
        let Some(uid_slot) = UidSlot::take(&per_uid, &stream) else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            connection(ctx, stream).await;
            drop(uid_slot);
            drop(permit);
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// One of a uid's [`MAX_PER_UID`] connections, given back on drop.
struct UidSlot {
    map: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
    uid: u32,
}

impl UidSlot {
    fn take(
        map: &Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
        stream: &UnixStream,
    ) -> Option<Self> {
        let uid = stream.peer_cred().ok()?.uid();
        let mut m = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(uid).or_default();
        if *n >= MAX_PER_UID {
            return None;
        }
        *n += 1;
        Some(Self {
            map: map.clone(),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Reads one line of at most [`MAX_REQUEST_BYTES`]; `None` at the end of the stream.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_REQUEST_BYTES + 1).unwrap_or(u64::MAX);
    let n = (&mut *r)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| "request is not UTF-8".to_owned())
}

/// Writes one reply line; a client that does not read it within [`WRITE_TIMEOUT`] is dropped.
async fn write(w: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> bool {
    let Ok(mut line) = serde_json::to_vec(reply) else {
        return false;
    };
    line.push(b'\n');
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&line)).await,
        Ok(Ok(()))
    )
}

/// The uid's name, looked up off the runtime's thread (NSS may ask LDAP or SSSD).
async fn username(uid: u32) -> String {
    let lookup = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    });
    match tokio::time::timeout(REQUEST_TIMEOUT, lookup).await {
        Ok(Ok(Some(name))) => name,
        _ => String::new(),
    }
}

fn criteria(query: &str, uid: i32, mine_ok: bool) -> Result<(Criteria, usize), String> {
    let q = Query::parse(query)?;
    let mut c = q.criteria;
    c.caller = Some(uid);
    c.mine_ok = mine_ok;
    Ok((c, q.count))
}

async fn connection(ctx: Ctx, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("CLI socket: cannot tell who connected: {e}");
            return;
        }
    };
    let uid_raw = cred.uid();
    // The contract carries uids as int32; larger ones would all look alike.
    let Ok(uid) = i32::try_from(uid_raw) else {
        return;
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let line = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut r)).await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => return,
        Ok(Err(why)) => {
            write(&mut w, &Reply::error(why)).await;
            return;
        }
        Err(_) => {
            write(&mut w, &Reply::error("no request within 10 s")).await;
            return;
        }
    };
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            write(&mut w, &Reply::error(format!("bad request: {e}"))).await;
            return;
        }
    };
    let coord = &ctx.coord;
    let host = coord.host().to_owned();
    let ok = |gpus| Reply {
        ok: true,
        host: host.clone(),
        gpus,
        ..Default::default()
    };
    let reply = match req {
        Request::Free { query, mine_ok } => match criteria(&query, uid, mine_ok) {
            Ok((c, _)) => {
                let info = ctx.sampler.report_raw();
                let mut reply = ok(coord.free(&info, &c));
                if reply.gpus.is_empty() {
                    reply.note = info.err;
                }
                reply
            }
            Err(e) => Reply::error(e),
        },
        Request::Hold {
            query,
            mine_ok,
            count,
            gpus,
            hold_ms,
        } => match criteria(&query, uid, mine_ok) {
            Ok((c, _)) => {
                let info = ctx.sampler.report_raw();
                let name = username(uid_raw).await;
                let hold = Duration::from_millis(hold_ms);
                match coord.hold(&info, &Caller::new(uid, &name), &gpus, count, &c, hold) {
                    Ok(rows) => {
                        tracing::info!("{name} (uid {uid}) holds {} GPU(s) by hand", rows.len());
                        ok(rows)
                    }
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Err(e) => Reply::error(e),
        },
        Request::Release { gpus } => match coord.release(&ctx.sampler.report_raw(), uid, &gpus) {
            Ok(released) => Reply {
                ok: true,
                host: host.clone(),
                released,
                ..Default::default()
            },
            Err(e) => Reply::error(e.to_string()),
        },
        Request::Cluster { params } => match &ctx.relay {
            None => Reply::error(RelayError::NoHub.to_string()),
            Some(relay) => match relay.ask(params, RELAY_TIMEOUT).await {
                Ok(body) => Reply {
                    ok: true,
                    host: host.clone(),
                    body: String::from_utf8(body)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    ..Default::default()
                },
                Err(e) => Reply::error(e.to_string()),
            },
        },
        Request::Notify { params } => match &ctx.relay {
            None => Reply::error(RelayError::NoHub.to_string()),
            Some(relay) => match relay
                .ask_as("subscribe", params, username(uid_raw).await, RELAY_TIMEOUT)
                .await
            {
                Ok(body) => Reply {
                    ok: true,
                    host: host.clone(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    ..Default::default()
                },
                Err(e) => Reply::error(e.to_string()),
            },
        },
        Request::Wait {
            query,
            mine_ok,
            count,
            hold_ms,
        } => {
            wait(&ctx, &mut r, &mut w, uid, &query, mine_ok, count, hold_ms).await;
            return;
        }
        Request::Started => Reply::error("nothing to start: no wait on this connection"),
    };
    write(&mut w, &reply).await;
}

/// A `wait`: queued until granted, then held until the caller says its command starts (or
/// goes away, which releases the GPUs). The caller's timeout is its own: it closes the
/// connection, and the wait ends here with it.
#[allow(clippy::too_many_arguments)]
async fn wait<R: AsyncRead + Unpin>(
    ctx: &Ctx,
    r: &mut BufReader<R>,
    w: &mut (impl AsyncWriteExt + Unpin),
    uid: i32,
    query: &str,
    mine_ok: bool,
    count: usize,
    hold_ms: u64,
) {
    let coord = &ctx.coord;
    let c = match criteria(query, uid, mine_ok) {
        Ok((c, _)) => c,
        Err(e) => {
            write(w, &Reply::error(e)).await;
            return;
        }
    };
    let name = username(u32::try_from(uid).unwrap_or_default()).await;
    let info = ctx.sampler.report_raw();
    let hold = Duration::from_millis(hold_ms);
    let ticket = match coord.wait(&info, &Caller::new(uid, &name), count, c, hold) {
        Ok(t) => t,
        Err(e) => {
            write(w, &Reply::error(e.to_string())).await;
            return;
        }
    };
    let id = ticket.id;
    // The caller writes nothing while it waits: any read result means it went away.
    let granted = tokio::select! {
        g = ticket.granted => g.ok(),
        _ = read_line(r) => None,
    };
    let Some(rows) = granted else {
        coord.cancel(id);
        return;
    };
    let gpus: Vec<String> = rows.iter().map(|g| g.index.to_string()).collect();
    tracing::info!(
        "{name} (uid {uid}) waited for and holds GPU(s) {}",
        gpus.join(",")
    );
    let reply = Reply {
        ok: true,
        host: coord.host().to_owned(),
        gpus: rows,
        ..Default::default()
    };
    if !write(w, &reply).await {
        coord.cancel(id);
        return;
    }
    // The CLI says `Started` as soon as it has the answer; one that does not within the
    // request timeout is gone for all purposes.
    match tokio::time::timeout(REQUEST_TIMEOUT, read_line(r)).await {
        Ok(Ok(Some(line))) if matches!(serde_json::from_str(line.trim()), Ok(Request::Started)) => {
            coord.started(id);
            write(
                w,
                &Reply {
                    ok: true,
                    ..Default::default()
                },
            )
            .await;
        }
        _ => {
            let released = coord.cancel(id);
            if !released.is_empty() {
                tracing::info!(
                    "{name} (uid {uid}) went away before starting: GPU(s) {released:?} released"
                );
            }
        }
    }
}
