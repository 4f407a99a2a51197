//! [`Peer`]: the public face of a peer connection, over the `webrtc` crate's async layer
//! (`connection/`).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::{Channel, IceCandidate, PeerEvent, TransportConfig, TransportError};

/// A WebRTC peer connection that hands out byte streams. Cheap to clone; all clones are the
/// same connection. The connection closes when the last clone is dropped or on [`Peer::close`].
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Connection>,
}

/// The connection address of a candidate line (`candidate:foundation component transport
/// priority address port typ …`, RFC 8839), when it is an IP address.
fn candidate_ip(line: &str) -> Option<std::net::IpAddr> {
    let line = line.strip_prefix("a=").unwrap_or(line);
    let line = line.strip_prefix("candidate:").unwrap_or(line);
    line.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// Largest accepted `max_message`.
const MAX_MESSAGE_LIMIT: usize = 256 * 1024;

impl Peer {
    /// Create a peer connection. Returns the peer and its event stream; keep draining the
    /// events (they carry the local candidates, which must reach the other side).
    pub async fn new(
        cfg: TransportConfig,
    ) -> Result<(Peer, mpsc::Receiver<PeerEvent>), TransportError> {
        if cfg.max_message == 0 || cfg.max_message > MAX_MESSAGE_LIMIT {
            return Err(TransportError::Config(format!(
                "max_message must be between 1 and {MAX_MESSAGE_LIMIT} bytes, not {}",
                cfg.max_message
            )));
        }
        let (p, events) = Connection::new(&cfg).await?;
        Ok((Peer { inner: Arc::new(p) }, events))
    }

    /// Offerer: open the "command" channel (as yakk/1 peers do; it starts SCTP
    /// negotiation and is never handed out) and return the offer SDP. Local candidates follow
    /// as [`PeerEvent::LocalCandidate`].
    pub async fn create_offer(&self) -> Result<String, TransportError> {
        self.inner.create_offer().await
    }

    /// Answerer: apply the peer's offer SDP and return the answer SDP.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, TransportError> {
        self.inner.accept_offer(sdp).await
    }

    /// Offerer: apply the peer's answer SDP.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), TransportError> {
        self.inner.accept_answer(sdp).await
    }

    /// Add a candidate from the peer. Candidates that arrive before the remote description
    /// are queued and applied with it. A candidate whose address is not one host's (multicast,
    /// broadcast, unspecified) is refused: connectivity checks never go there.
    pub async fn add_remote_candidate(&self, c: IceCandidate) -> Result<(), TransportError> {
        if let Some(ip) = candidate_ip(&c.candidate).filter(|ip| !crate::netbuf::is_unicast(*ip)) {
            return Err(TransportError::BadCandidate(format!(
                "{ip} is not a unicast address"
            )));
        }
        self.inner.add_remote_candidate(c).await
    }

    /// Open a reliable, ordered channel with this label; resolves once it is open. Put a
    /// timeout around it: a peer that never answers leaves it pending until the connection
    /// ends.
    pub async fn open_channel(&self, label: &str) -> Result<Channel, TransportError> {
        self.inner.open_channel(label).await
    }

    /// The next channel the peer opened (never "command"), with its label; `None` once the
    /// connection has ended.
    pub async fn accept_channel(&self) -> Option<(String, Channel)> {
        self.inner.accept_channel().await
    }

    /// Use per-stream flow control on this connection's streams: only when both sides
    /// announced it (a peer without it would take the grants for end-of-stream markers), and
    /// before the first stream is opened or accepted. Needs half-close (yakk/2).
    pub fn set_flow_control(&self, on: bool) {
        self.inner.set_flow_control(on)
    }

    /// With flow control, let the side that opened a channel close it once both directions
    /// have ended, rather than the side that accepted it: only when both sides announced it,
    /// and before the first stream. Between two peers on this WebRTC stack it keeps a new
    /// channel off a stream id whose reset is still going back and forth (see the transport
    /// section of docs/yakk2.md).
    pub fn set_opener_closes(&self, on: bool) {
        self.inner.set_opener_closes(on)
    }

    /// Limit the window growth all streams of this connection share together (32 MiB unless
    /// set): a session striped over several connections shares that amount among them.
    /// Call before the first stream.
    pub fn set_window_pool(&self, bytes: u64) {
        self.inner.set_window_pool(bytes)
    }

    /// Limit the bytes all streams of this connection together may have handed to the stack
    /// and not yet had acknowledged (4 MiB unless set; at least one message). A striped
    /// session lowers it on each lane, so that a lane that is slow at the moment (after a
    /// loss) holds little of the stream. Call before the first stream.
    pub fn set_send_budget(&self, bytes: usize) {
        self.inner.set_send_budget(bytes)
    }

    /// The peer asked for small bursts (yakk/2 `small-bursts`, the browser page, whose socket
    /// drops a large flight): the send budget becomes 128 KiB per 2 ms of the path's round
    /// trip, at least 128 KiB, fitted again once the path is up. Call before the first stream.
    pub fn set_small_bursts(&self, on: bool) {
        self.inner.set_small_bursts(on)
    }

    /// Close the connection; every stream ends and a [`PeerEvent::Disconnected`] follows.
    pub async fn close(&self) {
        self.inner.close().await
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    const fn assert_send<T: Send + 'static>() {}
    assert_send_sync::<Peer>();
    assert_send::<Channel>();
};

#[cfg(test)]
mod tests {
    use super::candidate_ip;

    #[test]
    fn candidate_addresses() {
        let ip = |s: &str| candidate_ip(s).map(|ip| ip.to_string());
        assert_eq!(
            ip("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            ip("a=candidate:1 1 UDP 1 ff02::fb 5353 typ host").as_deref(),
            Some("ff02::fb")
        );
        assert_eq!(ip("candidate:1 1 udp 1 abc.local 5000 typ host"), None);
        assert_eq!(ip("candidate:1 1 udp"), None);
    }
}
