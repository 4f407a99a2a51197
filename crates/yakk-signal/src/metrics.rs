//! Counters of the server and their Prometheus text rendering (`GET /metrics`).
//!
//! Plain atomics; gauges of rooms and mailboxes are read from the registry when rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the server turned something away or closed a socket. Each is one label value of
/// `yakk_signal_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    NoSuchRoom,
    RoomFull,
    TooManyRooms,
    RateLimited,
    TooManyConnections,
    MessageTooLarge,
    Malformed,
    NotInRoom,
    BadRequest,
    SlowConsumer,
    IdleTimeout,
    RoomLifetime,
    PingTimeout,
    TooManyFromAddress,
    LobbyTimeout,
    SelfAddressed,
}

impl Rejection {
    const ALL: [Rejection; 16] = [
        Rejection::NoSuchRoom,
        Rejection::RoomFull,
        Rejection::TooManyRooms,
        Rejection::RateLimited,
        Rejection::TooManyConnections,
        Rejection::MessageTooLarge,
        Rejection::Malformed,
        Rejection::NotInRoom,
        Rejection::BadRequest,
        Rejection::SlowConsumer,
        Rejection::IdleTimeout,
        Rejection::RoomLifetime,
        Rejection::PingTimeout,
        Rejection::TooManyFromAddress,
        Rejection::LobbyTimeout,
        Rejection::SelfAddressed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::NoSuchRoom => "no_such_room",
            Rejection::RoomFull => "room_full",
            Rejection::TooManyRooms => "too_many_rooms",
            Rejection::RateLimited => "rate_limited",
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::MessageTooLarge => "message_too_large",
            Rejection::Malformed => "malformed",
            Rejection::NotInRoom => "not_in_room",
            Rejection::BadRequest => "bad_request",
            Rejection::SlowConsumer => "slow_consumer",
            Rejection::IdleTimeout => "idle_timeout",
            Rejection::RoomLifetime => "room_lifetime",
            Rejection::PingTimeout => "ping_timeout",
            Rejection::TooManyFromAddress => "too_many_from_address",
            Rejection::LobbyTimeout => "lobby_timeout",
            Rejection::SelfAddressed => "self_addressed",
        }
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub rooms_created: AtomicU64,
    pub joins: AtomicU64,
    pub messages_relayed: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub dropped_unknown_recipient: AtomicU64,
    pub rooms_expired: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
}

impl Metrics {
    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, why: Rejection) -> u64 {
        self.rejections[why as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, rooms: usize, mailboxes: usize) -> String {
        let mut out = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric("yakk_signal_rooms", "gauge", "Live rooms.", rooms as u64);
        metric(
            "yakk_signal_mailboxes",
            "gauge",
            "Mailboxes (WebSockets in a room).",
            mailboxes as u64,
        );
        metric(
            "yakk_signal_connections",
            "gauge",
            "Open WebSocket connections.",
            get(&self.connections),
        );
        metric(
            "yakk_signal_connections_total",
            "counter",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        metric(
            "yakk_signal_rooms_created_total",
            "counter",
            "Rooms created.",
            get(&self.rooms_created),
        );
        metric(
            "yakk_signal_rooms_expired_total",
            "counter",
            "Rooms deleted after their empty-room grace period or lifetime.",
            get(&self.rooms_expired),
        );
        metric(
            "yakk_signal_joins_total",
            "counter",
            "Successful joins.",
            get(&self.joins),
        );
        metric(
            "yakk_signal_messages_relayed_total",
            "counter",
            "Messages relayed between mailboxes.",
            get(&self.messages_relayed),
        );
        metric(
            "yakk_signal_bytes_relayed_total",
            "counter",
            "Bytes of relayed messages, as sent to recipients.",
            get(&self.bytes_relayed),
        );
        metric(
            "yakk_signal_messages_dropped_total",
            "counter",
            "Messages dropped because no mailbox with the recipient id is in the room.",
            get(&self.dropped_unknown_recipient),
        );
        let _ = writeln!(
            out,
            "# HELP yakk_signal_rejections_total Requests refused and sockets closed, by reason."
        );
        let _ = writeln!(out, "# TYPE yakk_signal_rejections_total counter");
        for why in Rejection::ALL {
            let _ = writeln!(
                out,
                "yakk_signal_rejections_total{{reason=\"{}\"}} {}",
                why.label(),
                self.rejections(why)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_its_own_slot_and_line() {
        let m = Metrics::default();
        for (i, why) in Rejection::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i);
            m.reject(why);
        }
        m.reject(Rejection::RoomFull);
        let text = m.render(3, 5);
        assert!(text.contains("yakk_signal_rooms 3\n"));
        assert!(text.contains("yakk_signal_mailboxes 5\n"));
        assert!(text.contains("yakk_signal_rejections_total{reason=\"room_full\"} 2\n"));
        assert!(text.contains("yakk_signal_rejections_total{reason=\"ping_timeout\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
