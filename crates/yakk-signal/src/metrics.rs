//! Counters of the server and `GET /metrics`.
//!
//! Plain atomics, read when `/metrics` is asked for (gauges of rooms and mailboxes from the
//! registry); `prometheus-client` writes them out ([`Exposition`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric as _, MetricEncoder, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

    /// The server's families, with the live `rooms` and `mailboxes` read from the registry.
    pub fn expose(&self, rooms: usize, mailboxes: usize, out: &mut Exposition) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.gauge("yakk_signal_rooms", "Live rooms.", rooms as u64);
        out.gauge(
            "yakk_signal_mailboxes",
            "Mailboxes (WebSockets in a room).",
            mailboxes as u64,
        );
        out.gauge(
            "yakk_signal_connections",
            "Open WebSocket connections.",
            get(&self.connections),
        );
        out.counter(
            "yakk_signal_connections_total",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        out.counter(
            "yakk_signal_rooms_created_total",
            "Rooms created.",
            get(&self.rooms_created),
        );
        out.counter(
            "yakk_signal_rooms_expired_total",
            "Rooms deleted after their empty-room grace period or lifetime.",
            get(&self.rooms_expired),
        );
        out.counter(
            "yakk_signal_joins_total",
            "Successful joins.",
            get(&self.joins),
        );
        out.counter(
            "yakk_signal_messages_relayed_total",
            "Messages relayed between mailboxes.",
            get(&self.messages_relayed),
        );
        out.counter(
            "yakk_signal_bytes_relayed_total",
            "Bytes of relayed messages, as sent to recipients.",
            get(&self.bytes_relayed),
        );
        out.counter(
            "yakk_signal_messages_dropped_total",
            "Messages dropped because no mailbox with the recipient id is in the room.",
            get(&self.dropped_unknown_recipient),
        );
        out.counters(
            "yakk_signal_rejections_total",
            "Requests refused and sockets closed, by reason.",
            Rejection::ALL.into_iter().map(|why| {
                (
                    vec![("reason", why.label().to_string())],
                    self.rejections(why),
                )
            }),
        );
    }
}

/// The labels of one series: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Metric families read at scrape time, written out in the Prometheus text format (0.0.4) by
/// `prometheus-client`. The counters live in plain atomics where they are counted; this takes
/// their values when `/metrics` is asked for.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    /// Without the `_total` of a counter: the library adds it.
    name: String,
    help: String,
    kind: MetricType,
    series: Vec<(Labels, u64)>,
}

impl Exposition {
    fn push(&mut self, name: &str, help: &str, kind: MetricType, series: Vec<(Labels, u64)>) {
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            series,
        });
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.push(name, help, MetricType::Gauge, vec![(Vec::new(), value)]);
    }

    /// A gauge with labelled series.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        self.push(name, help, MetricType::Gauge, series.into_iter().collect());
    }

    /// A counter; `name` is the exposed name, `_total` included.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.push(name, help, MetricType::Counter, vec![(Vec::new(), value)]);
    }

    /// A counter with labelled series; `name` is the exposed name, `_total` included.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        self.push(
            name,
            help,
            MetricType::Counter,
            series.into_iter().collect(),
        );
    }

    /// The text of `GET /metrics`.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(4096);
        // Writing into a `String` cannot fail, and every name and label here is ours.
        if let Err(e) = prometheus_text::encode(&mut out, &registry) {
            tracing::warn!("metrics: cannot encode: {e}");
        }
        out
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        fn value(kind: MetricType, v: u64, metric: MetricEncoder) -> fmt::Result {
            match kind {
                MetricType::Counter => ConstCounter::new(v).encode(metric),
                _ => ConstGauge::new(v).encode(metric),
            }
        }
        for f in &self.families {
            let mut family = encoder.encode_descriptor(&f.name, &f.help, None, f.kind)?;
            match f.series.as_slice() {
                [(labels, v)] if labels.is_empty() => value(f.kind, *v, family)?,
                series => {
                    for (labels, v) in series {
                        value(f.kind, *v, family.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
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
        let mut out = Exposition::default();
        m.expose(3, 5, &mut out);
        let text = out.render();
        assert!(text.contains("yakk_signal_rooms 3\n"));
        assert!(text.contains("yakk_signal_mailboxes 5\n"));
        assert!(text.contains("yakk_signal_rejections_total{reason=\"room_full\"} 2\n"));
        assert!(text.contains("yakk_signal_rejections_total{reason=\"ping_timeout\"} 1\n"));
        assert!(text.contains("# TYPE yakk_signal_rooms gauge\n"));
        assert!(text.contains("# TYPE yakk_signal_rejections_total counter\n"));
        assert!(text.contains(
            "# HELP yakk_signal_joins_total Successful joins.\n\
             # TYPE yakk_signal_joins_total counter\n\
             yakk_signal_joins_total 0\n"
        ));
        // Each family once, with its help.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!((names.len(), helps), (types.len(), types.len()));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
