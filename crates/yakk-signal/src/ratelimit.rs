//! Per-client limits: request rates (room creations, joins), a token bucket per client address
//! driven by the time the caller passes in; and concurrent WebSockets per client address
//! ([`ConnectionLimit`]). Both are pure structures.
//!
//! IPv6 clients are keyed by their /64 prefix, since one host usually holds a whole /64. The map
//! of buckets is bounded; when it is full of clients that are all still rate-limited, new
//! clients are refused too (memory stays bounded; this only happens under a wide attack). The
//! connection counts hold an entry only while its client has a connection open, so they are
//! bounded by the server's connection cap.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// The key a client is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The address (IPv6: the first address of its /64).
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientKey(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// At most `per_minute` requests per client in any minute on average, with bursts up to
/// `per_minute`. `per_minute == 0` disables the limit.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    max_clients: usize,
    buckets: HashMap<ClientKey, Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, max_clients: usize) -> Self {
        RateLimiter {
            per_minute,
            max_clients,
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let cap = f64::from(self.per_minute);
        bucket.tokens = (bucket.tokens + elapsed * cap / WINDOW.as_secs_f64()).min(cap);
        bucket.updated = now;
    }

    /// Takes one request from `client`'s allowance; false when it has none left.
    pub fn allow(&mut self, client: ClientKey, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if !self.buckets.contains_key(&client) && self.buckets.len() >= self.max_clients {
            self.prune(now);
            if self.buckets.len() >= self.max_clients {
                return false;
            }
        }
        let cap = f64::from(self.per_minute);
        let mut bucket = *self.buckets.entry(client).or_insert(Bucket {
            tokens: cap,
            updated: now,
        });
        self.refill(&mut bucket, now);
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        self.buckets.insert(client, bucket);
        allowed
    }

    /// Forgets clients whose allowance is full again (they would start afresh anyway).
    pub fn prune(&mut self, now: Instant) {
        let cap = f64::from(self.per_minute);
        let per_sec = cap / WINDOW.as_secs_f64();
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * per_sec < cap
        });
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// At most `per_client` concurrent connections per client address; `per_client == 0` disables
/// the limit. Every successful [`ConnectionLimit::acquire`] must be matched by one
/// [`ConnectionLimit::release`] when that connection ends.
#[derive(Debug)]
pub struct ConnectionLimit {
    per_client: usize,
    open: HashMap<ClientKey, usize>,
}

impl ConnectionLimit {
    pub fn new(per_client: usize) -> Self {
        ConnectionLimit {
            per_client,
            open: HashMap::new(),
        }
    }

    /// Counts one more connection of `client`; false (and nothing counted) when it already has
    /// `per_client` open.
    pub fn acquire(&mut self, client: ClientKey) -> bool {
        if self.per_client == 0 {
            return true;
        }
        let open = self.open.entry(client).or_insert(0);
        if *open >= self.per_client {
            return false;
        }
        *open += 1;
        true
    }

    /// One connection of `client` ended.
    pub fn release(&mut self, client: ClientKey) {
        if let Some(open) = self.open.get_mut(&client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open.remove(&client);
            }
        }
    }

    /// Connections `client` has open (as counted).
    pub fn open(&self, client: ClientKey) -> usize {
        self.open.get(&client).copied().unwrap_or(0)
    }

    /// Clients with at least one connection counted.
    pub fn tracked(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn connection_limit_is_per_client_and_freed_on_release() {
        let mut cl = ConnectionLimit::new(3);
        for _ in 0..3 {
            assert!(cl.acquire(v4(1)));
        }
        assert!(!cl.acquire(v4(1)), "a fourth connection from one address");
        assert_eq!(cl.open(v4(1)), 3, "a refusal counts nothing");
        // Another address is unaffected.
        assert!(cl.acquire(v4(2)));
        // One leaves: one more may come.
        cl.release(v4(1));
        assert!(cl.acquire(v4(1)));
        assert!(!cl.acquire(v4(1)));
        // One /64 is one client.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let mut cl = ConnectionLimit::new(1);
        assert!(cl.acquire(a.into()));
        assert!(!cl.acquire(b.into()));
        // Entries go once their last connection ends; a stray release is harmless.
        cl.release(a.into());
        cl.release(a.into());
        assert_eq!(cl.tracked(), 0);
        assert!(cl.acquire(b.into()));
    }

    #[test]
    fn connection_limit_zero_disables() {
        let mut cl = ConnectionLimit::new(0);
        for _ in 0..10_000 {
            assert!(cl.acquire(v4(1)));
        }
        assert_eq!(cl.tracked(), 0);
    }

    fn v4(last: u8) -> ClientKey {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)).into()
    }

    #[test]
    fn allows_a_burst_then_refills_over_the_minute() {
        let mut rl = RateLimiter::new(60, 100);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(rl.allow(v4(1), t0));
        }
        assert!(!rl.allow(v4(1), t0));
        // Other clients are unaffected.
        assert!(rl.allow(v4(2), t0));
        // One token per second comes back.
        assert!(!rl.allow(v4(1), t0 + Duration::from_millis(900)));
        assert!(rl.allow(v4(1), t0 + Duration::from_millis(1900)));
        assert!(!rl.allow(v4(1), t0 + Duration::from_millis(1900)));
        // After a full minute the whole burst is back.
        let t1 = t0 + Duration::from_secs(62);
        for _ in 0..60 {
            assert!(rl.allow(v4(1), t1));
        }
        assert!(!rl.allow(v4(1), t1));
    }

    #[test]
    fn zero_disables() {
        let mut rl = RateLimiter::new(0, 1);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(rl.allow(v4((i % 250) as u8), t0));
        }
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn ipv6_hosts_in_one_slash64_share_a_bucket_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::from(a), ClientKey::from(b));
        assert_ne!(ClientKey::from(a), ClientKey::from(c));
        let m: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(ClientKey::from(m), v4(1));
    }

    #[test]
    fn bounded_client_table() {
        let mut rl = RateLimiter::new(2, 2);
        let t0 = Instant::now();
        assert!(rl.allow(v4(1), t0));
        assert!(rl.allow(v4(2), t0));
        // Table full of clients that are not back to a full allowance: refuse newcomers.
        assert!(!rl.allow(v4(3), t0));
        // Once the others have refilled they are pruned and the newcomer gets in.
        assert!(rl.allow(v4(3), t0 + Duration::from_secs(60)));
        assert!(rl.tracked() <= 2);
        rl.prune(t0 + Duration::from_secs(1000));
        assert_eq!(rl.tracked(), 0);
    }
}
