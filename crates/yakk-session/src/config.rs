//! What a session is told: the signalling server, the password, the versions, the lanes.

use std::net::IpAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::IceServer;

/// Everything a peer needs to meet the other one.
#[derive(Clone)]
pub struct SessionConfig {
    /// The signalling server, as the user typed it (`host:port`, `ws://…`, `wss://…`).
    pub signal: String,
    pub password: Zeroizing<String>,
    /// Speak yakk/1 with a peer that only knows it (the original program).
    pub allow_v1: bool,
    /// Speak only yakk/1, as the original program does (interoperability tests).
    pub v1_only: bool,
    /// ICE servers from the command line, used in addition to those the server advertises.
    pub ice_servers: Vec<IceServer>,
    /// Local addresses for host candidates; empty means every interface.
    pub ice_ips: Vec<IpAddr>,
    /// Use only relayed paths (TURN) on every lane, even where a direct path exists:
    /// diagnosis and tests. With no TURN server at all (none here, none advertised by the
    /// signalling server), joining or creating a room fails with [`SessionError::NoPath`](crate::SessionError::NoPath).
    pub relay_only: bool,
    /// Owner: admit at most this many joiners over the room's life (checked by the owner
    /// itself; the server is asked to admit this many plus `allow_retries`).
    pub max_peers: Option<u32>,
    /// Owner: wrong passwords tolerated before the code is burned (0: the first one burns it).
    pub allow_retries: u32,
    /// Owner: ask for a longer grace period before an empty room is deleted.
    pub keep_alive: bool,
    /// How long ICE may take to find a path once the descriptions are exchanged.
    pub connect_timeout: Duration,
    /// Peer connections (lanes) to stripe every stream over (yakk/2; docs/yakk2.md, "Lanes").
    /// The session uses the larger wish of the two sides, at most [`MAX_LANES`](crate::MAX_LANES).
    /// [`LANES_AUTO`]: wish for [`AUTO_LANES`] when the peer is far, else for one.
    pub lanes: u32,
    /// Owner: the lanes all its joiners' connections may hold together. A joiner that comes
    /// while the others hold most of them gets what is left, at least one lane.
    pub owner_lane_budget: u32,
}

/// [`SessionConfig::owner_lane_budget`] by default: two far joiners with every lane, or many
/// with fewer (a lane costs about 1.2 MB).
pub const OWNER_LANE_BUDGET: u32 = 64;

/// [`SessionConfig::lanes`]: let the session choose by the round trip to the peer.
pub const LANES_AUTO: u32 = 0;
/// The lanes an automatic choice wishes for on a long path.
pub const AUTO_LANES: u32 = 32;
/// The round trip from which a path counts as long. One peer connection's rate on a lossy
/// link falls with the round trip (its window halves at every loss and grows by one packet
/// per round trip), and lanes cost little on a clean link (bench/WAN.md, "Lanes"); LANs
/// and loopback stay well below.
pub const LONG_PATH: Duration = Duration::from_millis(20);

/// The automatic wish: [`AUTO_LANES`] if the round trip (to the signalling server, see
/// `driver::choose_lanes`) is [`LONG_PATH`] or more.
pub fn auto_lanes(round_trip: Option<Duration>) -> u32 {
    match round_trip {
        Some(rtt) if rtt >= LONG_PATH => AUTO_LANES,
        _ => 1,
    }
}

impl SessionConfig {
    pub fn new(signal: impl Into<String>, password: impl Into<String>) -> Self {
        SessionConfig {
            signal: signal.into(),
            password: Zeroizing::new(password.into()),
            allow_v1: false,
            v1_only: false,
            ice_servers: Vec::new(),
            ice_ips: Vec::new(),
            relay_only: false,
            max_peers: None,
            allow_retries: 0,
            keep_alive: false,
            connect_timeout: Duration::from_secs(15),
            lanes: 1,
            owner_lane_budget: OWNER_LANE_BUDGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_LANES;

    #[test]
    fn automatic_lanes_follow_the_round_trip() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(auto_lanes(None), 1, "not measured");
        assert_eq!(auto_lanes(ms(1)), 1, "loopback or LAN");
        assert_eq!(auto_lanes(ms(19)), 1);
        assert_eq!(auto_lanes(ms(20)), AUTO_LANES);
        assert_eq!(auto_lanes(ms(150)), AUTO_LANES);
        const { assert!(AUTO_LANES <= MAX_LANES) };
    }
}
