//! The connection's own task: what the stack's callbacks report becomes [`PeerEvent`]s,
//! accepted channels and, in the end, the connection's shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, StatsSelector,
};

use super::{COMMAND_LABEL, Inner, SETUP_QUICK_AFTER_CONNECTED, attach};
use crate::channel::Channel;
use crate::stats::selected_path;
use crate::{Disconnect, IceCandidate, PathInfo, PeerEvent};

/// What the stack's callbacks report to the peer's own task.
pub(super) enum Internal {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
    /// The peer closed the "command" channel: it is closing the connection on purpose.
    PeerClosed,
}

/// Callbacks must return at once: they run on the stack's driver.
pub(super) struct Handler {
    pub(super) tx: mpsc::UnboundedSender<Internal>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.tx.send(Internal::Candidate(init));
            }
            Err(e) => tracing::warn!("local ICE candidate not serialisable: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Internal::State(state));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.tx.send(Internal::Channel(dc));
    }
}

/// Drain a channel nobody reads (the "command" channel) so the stack never blocks on it;
/// its opening says the association is up, and its closing by the peer that the peer is
/// leaving (see `Peer::close`).
pub(super) fn spawn_drain(dc: Arc<dyn DataChannel>, inner: &Arc<Inner>) {
    let (dead, sctp_up) = (inner.dead.clone(), inner.sctp_up.clone());
    let closed = inner.command_closed.clone();
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = dc.poll() => match ev {
                    None => break,
                    Some(DataChannelEvent::OnOpen) => {
                        sctp_up.send_replace(true);
                    }
                    Some(DataChannelEvent::OnClose) => {
                        closed.send_replace(true);
                        if let Some(inner) = inner.upgrade()
                            && !inner.closing.load(Ordering::SeqCst)
                        {
                            let _ = inner.internal.send(Internal::PeerClosed);
                        }
                        break;
                    }
                    Some(_) => {}
                },
                _ = dead.cancelled() => break,
            }
        }
    });
}

/// The peer's own task: turns the stack's callbacks into events, streams and shutdown.
pub(super) async fn run_events(
    inner: Weak<Inner>,
    dead: CancellationToken,
    mut rx: mpsc::UnboundedReceiver<Internal>,
    events: mpsc::Sender<PeerEvent>,
    accept: mpsc::Sender<(String, Channel)>,
) {
    let mut connected = false;
    let mut reason: Option<Disconnect> = None;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = dead.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            Internal::Candidate(init) => {
                let c = IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = events.send(PeerEvent::LocalCandidate(c)).await;
            }
            Internal::State(state) => match state {
                RTCPeerConnectionState::Connected if !connected => {
                    connected = true;
                    let Some(inner) = inner.upgrade() else { break };
                    inner.clock.quick_for(SETUP_QUICK_AFTER_CONNECTED);
                    let (mut path, relay_url) = path_info(&*inner.pc).await;
                    if let Some(rtt) = path.rtt {
                        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                        inner.rtt_us.store(us, Ordering::Relaxed);
                    }
                    super::budget::spawn_small_burst_refit(&inner);
                    // A relay reached through one of our bridges: over TCP or TLS, not the
                    // UDP its loopback URL says.
                    if let Some(bridge) =
                        relay_url.and_then(|u| inner.bridges.iter().find(|b| b.serves(&u)))
                    {
                        path.relay = Some(bridge.server().protocol());
                    }
                    inner.clock.relayed(path.relay.is_some());
                    drop(inner);
                    let _ = events.send(PeerEvent::Connected(path)).await;
                }
                RTCPeerConnectionState::Disconnected => {
                    reason = Some(Disconnect::Unresponsive);
                    break;
                }
                RTCPeerConnectionState::Failed => {
                    reason = Some(Disconnect::Failed);
                    break;
                }
                RTCPeerConnectionState::Closed => {
                    reason = Some(Disconnect::Closed);
                    break;
                }
                _ => {}
            },
            Internal::PeerClosed => {
                reason = Some(Disconnect::PeerClosed);
                break;
            }
            Internal::Channel(dc) => {
                let Some(strong) = inner.upgrade() else { break };
                // The peer opened a channel: the association is up.
                strong.sctp_up.send_replace(true);
                let accept = accept.clone();
                tokio::spawn(async move {
                    if strong.own.claim(&dc).await {
                        return;
                    }
                    let label = dc.label().await.unwrap_or_default();
                    if label == COMMAND_LABEL {
                        spawn_drain(dc.clone(), &strong);
                        *strong.command.lock().unwrap_or_else(|p| p.into_inner()) = Some(dc);
                        return;
                    }
                    let (stream, _) = attach(&strong, dc, false, Vec::new());
                    let dead = strong.dead.clone();
                    drop(strong);
                    tokio::select! {
                        _ = accept.send((label, stream)) => {}
                        _ = dead.cancelled() => {}
                    }
                });
            }
        }
    }
    dead.cancel();
    let why = reason.unwrap_or(Disconnect::Closed);
    let _ = events.try_send(PeerEvent::Disconnected(why));
}

/// The selected candidate pair, from the stats report.
pub(super) async fn path_info(pc: &dyn PeerConnection) -> (PathInfo, Option<String>) {
    selected_path(&pc.get_stats(Instant::now(), StatsSelector::None).await)
}
