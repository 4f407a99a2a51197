//! What the wrappers of both transports share: credentials, allocation quotas, the challenge
//! rate limit, per-allocation bandwidth and the counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Refusal, RelayConfig, RelayMetrics, Via};
use crate::ice::rest_password;
use crate::ratelimit::{ClientKey, RateLimiter};

/// Requests without MESSAGE-INTEGRITY (each costs the crate a remembered nonce) allowed per
/// client address per minute, and in all per second.
const CHALLENGES_PER_MINUTE_PER_CLIENT: u32 = 120;
const CHALLENGES_PER_SECOND: f64 = 100.0;
const CHALLENGE_BURST: f64 = 400.0;
/// Client addresses the challenge limiter tracks at most.
const CHALLENGE_CLIENTS: usize = 10_000;
/// An Allocate we let through and whose response we have not seen is forgotten after this.
const PENDING_TIMEOUT: Duration = Duration::from_secs(5);

/// A token bucket of bytes (one second of burst).
#[derive(Debug, Clone, Copy)]
struct ByteBucket {
    tokens: f64,
    updated: Instant,
}

impl ByteBucket {
    pub(super) fn new(rate: u64, now: Instant) -> Self {
        ByteBucket {
            tokens: rate as f64,
            updated: now,
        }
    }

    fn take(&mut self, rate: u64, n: usize, now: Instant) -> bool {
        let cap = rate as f64;
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + dt * cap).min(cap);
        self.updated = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// One live allocation, as seen from the outside.
#[derive(Debug)]
struct Live {
    username: String,
    expires: Instant,
    to_client: ByteBucket,
    from_client: ByteBucket,
}

/// Allocations are keyed by transport and client address (the 5-tuple, less the server's
/// address, which is one per transport).
pub(super) type Key = (Via, SocketAddr);

struct State {
    live: HashMap<Key, Live>,
    pending: HashMap<Key, (String, Instant)>,
    per_client: RateLimiter,
    global_tokens: f64,
    global_updated: Instant,
}

/// What the wrappers of both transports share: configuration, allocation book-keeping, metrics.
pub struct Gate {
    secret: String,
    allow_private_peers: bool,
    max_allocations: usize,
    max_per_user: usize,
    max_rate: u64,
    state: Mutex<State>,
    pub(super) metrics: RelayMetrics,
}

impl Gate {
    pub(super) fn new(config: &RelayConfig) -> Gate {
        let now = Instant::now();
        Gate {
            secret: config.secret.clone(),
            allow_private_peers: config.allow_private_peers,
            max_allocations: config.max_allocations,
            max_per_user: config.max_allocations_per_user,
            max_rate: config.max_rate,
            state: Mutex::new(State {
                live: HashMap::new(),
                pending: HashMap::new(),
                per_client: RateLimiter::new(CHALLENGES_PER_MINUTE_PER_CLIENT, CHALLENGE_CLIENTS),
                global_tokens: CHALLENGE_BURST,
                global_updated: now,
            }),
            metrics: RelayMetrics::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves whole maps and counters: keep using them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Live allocations (expired ones are forgotten on the way).
    pub fn live_allocations(&self) -> usize {
        let mut s = self.state();
        prune(&mut s, Instant::now());
        s.live.len()
    }

    /// Live allocations over each transport, in the order of [`Via::ALL`].
    pub fn live_allocations_via(&self) -> [usize; Via::ALL.len()] {
        let mut s = self.state();
        prune(&mut s, Instant::now());
        let mut by = [0; Via::ALL.len()];
        for (via, _) in s.live.keys() {
            by[*via as usize] += 1;
        }
        by
    }

    /// Whether `key` has a live allocation, or one on the way (its Allocate passed us).
    pub(super) fn has_allocation(&self, key: Key) -> bool {
        let mut s = self.state();
        prune(&mut s, Instant::now());
        s.live.contains_key(&key) || s.pending.contains_key(&key)
    }

    /// The password of `username`, if it is a REST username (`"<expiry>"` or
    /// `"<expiry>:<user>"`), with its expiry.
    pub(super) fn password(&self, username: &str) -> Option<(String, u64)> {
        let expiry = username.split_once(':').map_or(username, |(e, _)| e);
        let expiry: u64 = expiry.parse().ok()?;
        Some((rest_password(&self.secret, username), expiry))
    }

    /// May the relay send to `peer`?
    pub(super) fn peer_allowed(&self, peer: SocketAddr) -> bool {
        self.allow_private_peers || is_global(peer.ip())
    }

    /// May a request without credentials from `from` reach the crate (it costs a nonce)?
    pub(super) fn allow_challenge(&self, from: SocketAddr) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        let dt = now
            .saturating_duration_since(s.global_updated)
            .as_secs_f64();
        s.global_tokens = (s.global_tokens + dt * CHALLENGES_PER_SECOND).min(CHALLENGE_BURST);
        s.global_updated = now;
        if s.global_tokens < 1.0 || !s.per_client.allow(ClientKey::from(from.ip()), now) {
            return false;
        }
        s.global_tokens -= 1.0;
        true
    }

    /// Reserves a place for an Allocate from `key` by `username`; false if over a quota.
    pub(super) fn reserve(&self, key: Key, username: &str) -> Reserve {
        let now = Instant::now();
        let mut s = self.state();
        prune(&mut s, now);
        if s.live.contains_key(&key) {
            // The crate answers 437 (Allocation Mismatch) itself.
            return Reserve::Existing;
        }
        s.pending.remove(&key);
        let total = s.live.len() + s.pending.len();
        let mine = s.live.values().filter(|l| l.username == username).count()
            + s.pending.values().filter(|(u, _)| u == username).count();
        if total >= self.max_allocations || mine >= self.max_per_user {
            return Reserve::OverQuota;
        }
        s.pending.insert(key, (username.to_string(), now));
        Reserve::Ok
    }

    /// The crate answered an Allocate from `key`.
    pub(super) fn allocated(&self, key: Key, lifetime: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        let Some((username, _)) = s.pending.remove(&key) else {
            return;
        };
        if let Some(lifetime) = lifetime {
            self.metrics
                .allocations_total
                .fetch_add(1, Ordering::Relaxed);
            s.live.insert(
                key,
                Live {
                    username,
                    expires: now + lifetime,
                    to_client: ByteBucket::new(self.max_rate, now),
                    from_client: ByteBucket::new(self.max_rate, now),
                },
            );
        }
    }

    /// The crate refreshed (or, with a zero lifetime, deleted) the allocation of `key`.
    pub(super) fn refreshed(&self, key: Key, lifetime: Duration) {
        let mut s = self.state();
        if lifetime.is_zero() {
            s.live.remove(&key);
        } else if let Some(l) = s.live.get_mut(&key) {
            l.expires = Instant::now() + lifetime;
        }
    }

    /// Counts `n` relayed bytes of the allocation of `key`; false if over its bandwidth.
    pub(super) fn relayed(&self, key: Key, n: usize, to_client: bool) -> bool {
        if self.max_rate > 0 {
            let now = Instant::now();
            let mut s = self.state();
            if let Some(l) = s.live.get_mut(&key) {
                let bucket = if to_client {
                    &mut l.to_client
                } else {
                    &mut l.from_client
                };
                if !bucket.take(self.max_rate, n, now) {
                    drop(s);
                    self.metrics.refuse(Refusal::Bandwidth);
                    return false;
                }
            }
        }
        let counter = if to_client {
            &self.metrics.bytes_to_clients[key.0 as usize]
        } else {
            &self.metrics.bytes_from_clients[key.0 as usize]
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        true
    }
}

pub(super) enum Reserve {
    Ok,
    Existing,
    OverQuota,
}

fn prune(s: &mut State, now: Instant) {
    s.live.retain(|_, l| l.expires > now);
    s.pending
        .retain(|_, (_, since)| now.saturating_duration_since(*since) < PENDING_TIMEOUT);
}

/// Whether `ip` is an address on the Internet: not unspecified, loopback, private (RFC 1918,
/// unique local), shared (RFC 6598), link-local, multicast, broadcast or documentation.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ice::turn_rest_credentials;
    use crate::turn::RelayConfig;

    /// A gate of secret `north`: 2 allocations in all, 1 per user, no rate limit.
    pub(in crate::turn) fn gate() -> Gate {
        Gate::new(&RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: [127, 0, 0, 1].into(),
            ports: (50000, 50010),
            secret: "north".into(),
            tcp: false,
            max_allocations: 2,
            max_allocations_per_user: 1,
            max_rate: 0,
            credential_ttl: Duration::from_secs(600),
            allow_private_peers: false,
        })
    }

    #[test]
    fn passwords_are_those_handed_out() {
        let g = gate();
        let (u, p) = turn_rest_credentials("north", 1_700_000_000, "123");
        assert_eq!(g.password(&u), Some((p, 1_700_000_000)));
        assert_eq!(
            g.password("1700000000"),
            Some((rest_password("north", "1700000000"), 1_700_000_000))
        );
        assert_eq!(g.password("soon:123"), None);
        assert_eq!(g.password(""), None);
    }

    #[test]
    fn quotas_count_live_and_pending_allocations() {
        let g = gate();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert!(matches!(g.reserve((Via::Udp, a), "1:x"), Reserve::Ok));
        // Per user: one.
        assert!(matches!(
            g.reserve((Via::Udp, b), "1:x"),
            Reserve::OverQuota
        ));
        g.allocated((Via::Udp, a), Some(Duration::from_secs(60)));
        assert_eq!(g.live_allocations(), 1);
        assert!(matches!(g.reserve((Via::Udp, a), "1:x"), Reserve::Existing));
        assert!(matches!(g.reserve((Via::Udp, b), "1:y"), Reserve::Ok));
        g.allocated((Via::Udp, b), Some(Duration::from_secs(60)));
        // In all: two.
        assert!(matches!(
            g.reserve((Via::Udp, c), "1:z"),
            Reserve::OverQuota
        ));
        g.refreshed((Via::Udp, a), Duration::ZERO);
        assert!(matches!(g.reserve((Via::Udp, c), "1:z"), Reserve::Ok));
        g.allocated((Via::Udp, c), None);
        assert_eq!(g.live_allocations(), 1);
        assert_eq!(g.metrics().allocations_total(), 2);
    }

    #[test]
    fn only_global_peers_by_default() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.114.1", "8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
        let g = gate();
        assert!(!g.peer_allowed("127.0.0.1:9".parse().unwrap()));
        assert!(g.peer_allowed("8.8.8.8:9".parse().unwrap()));
    }

    #[test]
    fn bandwidth_is_capped_per_allocation() {
        let mut b = ByteBucket::new(1000, Instant::now());
        let t = Instant::now();
        assert!(b.take(1000, 600, t));
        assert!(!b.take(1000, 600, t));
        assert!(b.take(1000, 600, t + Duration::from_millis(300)));
    }
}
