//! Reading the selected candidate pair (path kind, addresses, round-trip time, how a relay
//! candidate reaches its server) out of a stats report.

use std::time::Duration;

use rtc::peer_connection::transport::{RTCIceCandidateType, RTCIceServerTransportProtocol};
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};

use crate::{PathInfo, PathKind, RelayProtocol};

/// The selected candidate pair, or the nominated one when no transport names a selection, and
/// the URL of the TURN server its local candidate was allocated on, if it is a relay candidate.
pub(crate) fn selected_path(report: &RTCStatsReport) -> (PathInfo, Option<String>) {
    let mut pair_id = None;
    for e in report.iter() {
        if let RTCStatsReportEntry::Transport(t) = e
            && !t.selected_candidate_pair_id.is_empty()
        {
            pair_id = Some(t.selected_candidate_pair_id.clone());
        }
    }
    let pair = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::IceCandidatePair(p)
            if pair_id.as_deref() == Some(p.stats.id.as_str())
                || (pair_id.is_none() && p.nominated) =>
        {
            Some(p)
        }
        _ => None,
    });
    let mut info = PathInfo {
        kind: PathKind::Host,
        local: String::new(),
        remote: String::new(),
        rtt: None,
        relay: None,
    };
    let Some(pair) = pair else {
        return (info, None);
    };
    let mut relay_url = None;
    let mut local_kind = PathKind::Host;
    let mut remote_kind = PathKind::Host;
    if pair.current_round_trip_time > 0.0 {
        info.rtt = Some(Duration::from_secs_f64(pair.current_round_trip_time));
    }
    for e in report.iter() {
        match e {
            RTCStatsReportEntry::LocalCandidate(c)
                if same_id(
                    &c.stats.id,
                    "RTCLocalIceCandidate_",
                    &pair.local_candidate_id,
                ) =>
            {
                info.local = format!("{}:{}", c.address.clone().unwrap_or_default(), c.port);
                local_kind = kind_of(c.candidate_type);
                if local_kind == PathKind::Relay {
                    info.relay = Some(relay_protocol(c.relay_protocol, &c.url));
                    relay_url = Some(c.url.clone());
                }
            }
            RTCStatsReportEntry::RemoteCandidate(c)
                if same_id(
                    &c.stats.id,
                    "RTCRemoteIceCandidate_",
                    &pair.remote_candidate_id,
                ) =>
            {
                info.remote = format!("{}:{}", c.address.clone().unwrap_or_default(), c.port);
                remote_kind = kind_of(c.candidate_type);
            }
            _ => {}
        }
    }
    info.kind = path_kind(local_kind, remote_kind);
    (info, relay_url)
}

/// How a local relay candidate reaches its TURN server: the stats' `relayProtocol` when the
/// stack fills it in, else from the server URL the candidate was gathered from (rtc 0.21.1
/// leaves `relayProtocol` unspecified for every candidate, but keeps the URL, written as
/// `turn:host:port?transport=udp`). `turns:` is TLS; `turn:` is TCP with `transport=tcp`,
/// else UDP (the default transport of a `turn:` URL, RFC 7065).
pub(crate) fn relay_protocol(stated: RTCIceServerTransportProtocol, url: &str) -> RelayProtocol {
    match stated {
        RTCIceServerTransportProtocol::Udp => return RelayProtocol::Udp,
        RTCIceServerTransportProtocol::Tcp => return RelayProtocol::Tcp,
        RTCIceServerTransportProtocol::Tls => return RelayProtocol::Tls,
        _ => {}
    }
    let url = url.trim().to_ascii_lowercase();
    if url.starts_with("turns:") {
        return RelayProtocol::Tls;
    }
    let tcp = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|kv| kv == "transport=tcp"));
    if tcp {
        RelayProtocol::Tcp
    } else {
        RelayProtocol::Udp
    }
}

fn kind_of(t: RTCIceCandidateType) -> PathKind {
    match t {
        RTCIceCandidateType::Srflx => PathKind::Srflx,
        RTCIceCandidateType::Prflx => PathKind::Prflx,
        RTCIceCandidateType::Relay => PathKind::Relay,
        _ => PathKind::Host,
    }
}

/// The path of a pair is its least direct end: relayed if either side's candidate is a
/// relay (one side reaching the other's TURN allocation directly is still a relayed path),
/// then through a NAT mapping (server- or peer-reflexive), else host to host.
pub(crate) fn path_kind(local: PathKind, remote: PathKind) -> PathKind {
    let rank = |k: PathKind| match k {
        PathKind::Host => 0,
        PathKind::Prflx => 1,
        PathKind::Srflx => 2,
        PathKind::Relay => 3,
    };
    if rank(remote) > rank(local) {
        remote
    } else {
        local
    }
}

/// Candidate stats are keyed "RTC{Local,Remote}IceCandidate_<id>"; pairs name the bare id.
pub(crate) fn same_id(stats_id: &str, prefix: &str, id: &str) -> bool {
    stats_id == id || stats_id.strip_prefix(prefix) == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_as_indirect_as_its_least_direct_end() {
        use PathKind::*;
        assert_eq!(path_kind(Host, Host), Host);
        assert_eq!(path_kind(Host, Relay), Relay);
        assert_eq!(path_kind(Relay, Host), Relay);
        assert_eq!(path_kind(Srflx, Prflx), Srflx);
        assert_eq!(path_kind(Host, Prflx), Prflx);
        assert_eq!(path_kind(Relay, Srflx), Relay);
    }

    #[test]
    fn the_relay_leg_is_told_by_the_stats_or_the_server_url() {
        use RTCIceServerTransportProtocol as Stated;
        let unknown = Stated::Unspecified;
        // What rtc 0.21.1 reports: no relayProtocol, the URL as the stack writes it.
        assert_eq!(
            relay_protocol(unknown, "turn:10.200.0.1:3478?transport=udp"),
            RelayProtocol::Udp
        );
        assert_eq!(
            relay_protocol(unknown, "turn:turn.example.org:3478?transport=tcp"),
            RelayProtocol::Tcp
        );
        assert_eq!(
            relay_protocol(unknown, "turns:turn.example.org:443?transport=tcp"),
            RelayProtocol::Tls
        );
        assert_eq!(
            relay_protocol(unknown, "TURN:[::1]:3478"),
            RelayProtocol::Udp
        );
        // A stated protocol wins over the URL.
        assert_eq!(
            relay_protocol(Stated::Tcp, "turn:h:3478?transport=udp"),
            RelayProtocol::Tcp
        );
        assert_eq!(relay_protocol(Stated::Tls, ""), RelayProtocol::Tls);
        assert_eq!(
            relay_protocol(Stated::Udp, "turns:h:443"),
            RelayProtocol::Udp
        );
    }
}
