//! Port forwarding: the joiner listens on a local TCP port and carries each accepted connection
//! over its own stream to the owner, who connects it to the shared port. Bytes are copied both
//! ways unframed, and a one-way shutdown (TCP half-close) is carried across.
//!
//! Knows nothing of WebRTC: it asks the session for streams.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use yakk_session::Connection;

/// Bytes read and written at a time. Matches the largest message between yakk/2 peers; the
/// transport splits further for yakk/1 peers.
const CHUNK: usize = 64 * 1024;

/// Counters of a forwarding session.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub bytes_to_peer: AtomicU64,
    pub bytes_from_peer: AtomicU64,
}

/// Copies both ways until both directions are done; each side's EOF becomes a shutdown of the
/// other's write half. Returns (bytes a→b, bytes b→a).
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, CHUNK, CHUNK).await
}

/// Owner side: every stream the peer opens is connected to `target` until the peer goes away.
/// Returns the reason the peer connection ended.
pub async fn serve_owner(conn: Arc<Connection>, target: String, stats: Arc<Stats>) -> String {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            why = conn.closed() => {
                tasks.abort_all();
                return why;
            }
            s = conn.accept_stream() => {
                let Some((label, mut stream)) = s else {
                    tasks.abort_all();
                    return conn.closed().await;
                };
                let target = target.clone();
                let stats = stats.clone();
                tasks.spawn(async move {
                    let mut tcp = match TcpStream::connect(&target).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!("cannot connect to {target} for {label}: {e}");
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%label, "forwarding to {target}");
                    match splice(&mut stream, &mut tcp).await {
                        Ok((from_peer, to_peer)) => {
                            stats.bytes_from_peer.fetch_add(from_peer, Ordering::Relaxed);
                            stats.bytes_to_peer.fetch_add(to_peer, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(%label, "connection ended: {e}"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Joiner side: every connection accepted on `listener` is carried to the owner over a new
/// stream. Returns the reason the peer connection ended.
pub async fn serve_joiner(
    conn: Arc<Connection>,
    listener: TcpListener,
    stats: Arc<Stats>,
) -> String {
    let mut tasks = JoinSet::new();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            why = conn.closed() => {
                tasks.abort_all();
                return why;
            }
            accepted = listener.accept() => {
                let (mut tcp, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                n += 1;
                // The reference owner expects DataConn<N>, N counting from 1.
                let label = format!("DataConn{n}");
                let conn = conn.clone();
                let stats = stats.clone();
                tasks.spawn(async move {
                    let mut stream = match conn.open_stream(&label).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("cannot open a stream for {from}: {e}");
                            return;
                        }
                    };
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    match splice(&mut tcp, &mut stream).await {
                        Ok((to_peer, from_peer)) => {
                            stats.bytes_to_peer.fetch_add(to_peer, Ordering::Relaxed);
                            stats.bytes_from_peer.fetch_add(from_peer, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(%label, "connection ended: {e}"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}
