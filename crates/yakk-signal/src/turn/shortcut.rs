//! The shortcut between two UDP allocations of this relay: a mirror of the crate's allocations,
//! channels and permissions, learnt only from requests it let through and the success responses
//! it sent, that tells where a client's ChannelData would end up when its peer is another
//! allocation of this relay (see the module documentation of `turn`).
//!
//! The mirror is never more permissive than the crate: it learns an entry only from a success
//! response, dates it from when it saw that response (the crate started its timer earlier), and
//! lets it expire [`MARGIN`] early. What it misses (a full map, a request it did not see) only
//! sends packets the long way, through the crate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use medea_turn::attr::{Attribute, ChannelNumber, Lifetime, XorPeerAddress, XorRelayAddress};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use stun_codec::{Message, MessageClass};

/// How much earlier than the crate's an entry of the mirror expires.
const MARGIN: Duration = Duration::from_secs(2);
/// The lifetime of a channel binding (the crate's `channel_bind_lifetime`).
pub(super) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// The lifetime of a permission (RFC 5766, section 8; the crate's).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Requests awaiting their response, at most, in all and per client.
const PENDING_MAX: usize = 256;
const PENDING_PER_CLIENT: usize = 8;
/// A request whose response did not come within this is forgotten.
const PENDING_TIMEOUT: Duration = Duration::from_secs(5);
/// Mirrored channels and permissions per allocation, at most (more go the long way).
const MAX_CHANNELS: usize = 256;
const MAX_PERMISSIONS: usize = 256;
/// Mirrored allocations, at most (the gate's quota keeps the crate's far below).
const MAX_ALLOCATIONS: usize = 65_536;
/// How often expired entries are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a request the crate was handed will do if it succeeds.
#[derive(Debug, PartialEq, Eq)]
enum Intent {
    /// ChannelBind: this channel to this peer (and a permission for its IP).
    Bind(u16, SocketAddr),
    /// CreatePermission: permissions for these IPs.
    Permit(Vec<IpAddr>),
    /// Two different requests with one transaction id: learn nothing from the response.
    Conflict,
}

#[derive(Debug)]
struct Alloc {
    relayed: SocketAddr,
    expires: Instant,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
    permissions: HashMap<IpAddr, Instant>,
}

impl Alloc {
    fn bind(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        if !self.channels.contains_key(&number) && self.channels.len() >= MAX_CHANNELS {
            self.sweep(now);
            if self.channels.len() >= MAX_CHANNELS {
                return;
            }
        }
        // The crate refuses a number bound to another peer or a peer bound to another number,
        // so these only drop what the mirror kept longer than it should have.
        if let Some((old, _)) = self.channels.get(&number)
            && *old != peer
        {
            self.by_peer.remove(&{ *old });
        }
        if let Some(old) = self.by_peer.get(&peer)
            && *old != number
        {
            self.channels.remove(&{ *old });
        }
        self.channels
            .insert(number, (peer, expiry(now, CHANNEL_LIFETIME)));
        self.by_peer.insert(peer, number);
        self.permit(peer.ip(), now);
    }

    fn permit(&mut self, ip: IpAddr, now: Instant) {
        if !self.permissions.contains_key(&ip) && self.permissions.len() >= MAX_PERMISSIONS {
            self.sweep(now);
            if self.permissions.len() >= MAX_PERMISSIONS {
                return;
            }
        }
        self.permissions
            .insert(ip, expiry(now, PERMISSION_LIFETIME));
    }

    fn sweep(&mut self, now: Instant) {
        self.channels.retain(|_, (_, e)| *e > now);
        let channels = &self.channels;
        self.by_peer.retain(|_, n| channels.contains_key(n));
        self.permissions.retain(|_, e| *e > now);
    }
}

/// When an entry the crate keeps for `lifetime` from now expires in the mirror.
fn expiry(now: Instant, lifetime: Duration) -> Instant {
    now + lifetime.saturating_sub(MARGIN)
}

#[derive(Debug, Default)]
struct State {
    /// By client address (UDP).
    allocs: HashMap<SocketAddr, Alloc>,
    /// Relayed address to client address.
    by_relayed: HashMap<SocketAddr, SocketAddr>,
    /// By client address and transaction id.
    pending: HashMap<(SocketAddr, [u8; 12]), (Intent, Instant)>,
    swept: Option<Instant>,
}

impl State {
    fn remove(&mut self, client: SocketAddr) {
        if let Some(a) = self.allocs.remove(&client)
            && self.by_relayed.get(&a.relayed) == Some(&client)
        {
            self.by_relayed.remove(&a.relayed);
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.swept = Some(now);
        let dead: Vec<SocketAddr> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in dead {
            self.remove(c);
        }
        for a in self.allocs.values_mut() {
            a.sweep(now);
        }
        self.pending
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < PENDING_TIMEOUT);
    }

    fn live(&self, client: &SocketAddr, now: Instant) -> Option<&Alloc> {
        self.allocs.get(client).filter(|a| a.expires > now)
    }
}

/// The relay's allocations over UDP, their channels and permissions, as the crate confirmed
/// them.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    state: Mutex<State>,
}

impl Mirror {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request from `client` the crate is about to handle (it passed our checks).
    pub(super) fn request(&self, client: SocketAddr, msg: &Message<Attribute>) {
        if msg.class() != MessageClass::Request {
            return;
        }
        let intent = if msg.method() == CHANNEL_BIND {
            let (Some(number), Some(peer)) = (
                msg.get_attribute::<ChannelNumber>(),
                msg.get_attribute::<XorPeerAddress>(),
            ) else {
                return;
            };
            Intent::Bind(number.value(), peer.address())
        } else if msg.method() == CREATE_PERMISSION {
            Intent::Permit(
                msg.attributes()
                    .filter_map(|a| match a {
                        Attribute::XorPeerAddress(p) => Some(p.address().ip()),
                        _ => None,
                    })
                    .take(MAX_PERMISSIONS)
                    .collect(),
            )
        } else {
            return;
        };
        let now = Instant::now();
        let mut s = self.state();
        s.sweep(now);
        if s.live(&client, now).is_none() {
            return;
        }
        let key = (client, *msg.transaction_id().as_bytes());
        if let Some((old, since)) = s.pending.get_mut(&key) {
            // A retransmission; anything else with the same id is ambiguous.
            if *old != intent {
                *old = Intent::Conflict;
            }
            *since = now;
            return;
        }
        if s.pending.len() >= PENDING_MAX {
            s.pending
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < PENDING_TIMEOUT);
        }
        let mine = s.pending.keys().filter(|(c, _)| *c == client).count();
        if s.pending.len() >= PENDING_MAX || mine >= PENDING_PER_CLIENT {
            return;
        }
        s.pending.insert(key, (intent, now));
    }

    /// A response or indication the crate sends to `client`.
    pub(super) fn response(&self, client: SocketAddr, msg: &Message<Attribute>) {
        let class = msg.class();
        if class != MessageClass::SuccessResponse && class != MessageClass::ErrorResponse {
            return;
        }
        let now = Instant::now();
        let mut s = self.state();
        s.sweep(now);
        let method = msg.method();
        if method == ALLOCATE {
            if class != MessageClass::SuccessResponse {
                return;
            }
            s.remove(client);
            let (Some(relayed), Some(lifetime)) = (
                msg.get_attribute::<XorRelayAddress>(),
                msg.get_attribute::<Lifetime>(),
            ) else {
                return;
            };
            let relayed = relayed.address();
            if let Some(old) = s.by_relayed.get(&relayed).copied() {
                s.remove(old);
            }
            if s.allocs.len() >= MAX_ALLOCATIONS {
                return;
            }
            s.allocs.insert(
                client,
                Alloc {
                    relayed,
                    expires: expiry(now, lifetime.lifetime()),
                    channels: HashMap::new(),
                    by_peer: HashMap::new(),
                    permissions: HashMap::new(),
                },
            );
            s.by_relayed.insert(relayed, client);
        } else if method == REFRESH {
            if class != MessageClass::SuccessResponse {
                return;
            }
            match msg.get_attribute::<Lifetime>().map(Lifetime::lifetime) {
                Some(l) if !l.is_zero() => {
                    if let Some(a) = s.allocs.get_mut(&client)
                        && a.expires > now
                    {
                        a.expires = expiry(now, l);
                    }
                }
                _ => s.remove(client),
            }
        } else if method == CHANNEL_BIND || method == CREATE_PERMISSION {
            let key = (client, *msg.transaction_id().as_bytes());
            let Some((intent, _)) = s.pending.remove(&key) else {
                return;
            };
            if class != MessageClass::SuccessResponse {
                return;
            }
            let Some(a) = s.allocs.get_mut(&client).filter(|a| a.expires > now) else {
                return;
            };
            match intent {
                Intent::Bind(number, peer) if method == CHANNEL_BIND => a.bind(number, peer, now),
                Intent::Permit(ips) if method == CREATE_PERMISSION => {
                    for ip in ips {
                        a.permit(ip, now);
                    }
                }
                _ => {}
            }
        }
    }

    /// Where ChannelData from `client` on channel `number` would reach a client of this relay:
    /// that client's address and the channel it arrives on, if every step of the way is live.
    pub(super) fn route(&self, client: SocketAddr, number: u16) -> Option<(SocketAddr, u16)> {
        let now = Instant::now();
        let s = self.state();
        let from = s.live(&client, now)?;
        let peer = from
            .channels
            .get(&number)
            .filter(|(_, e)| *e > now)
            .map(|(p, _)| *p)?;
        let to = *s.by_relayed.get(&peer)?;
        let dest = s.live(&to, now).filter(|a| a.relayed == peer)?;
        dest.permissions
            .get(&from.relayed.ip())
            .filter(|e| **e > now)?;
        let back = *dest.by_peer.get(&from.relayed)?;
        dest.channels
            .get(&back)
            .filter(|(p, e)| *p == from.relayed && *e > now)?;
        Some((to, back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_codec::TransactionId;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn msg(class: MessageClass, method: stun_codec::Method, id: u8) -> Message<Attribute> {
        Message::new(class, method, TransactionId::new([id; 12]))
    }

    fn allocated(m: &Mirror, client: SocketAddr, relayed: SocketAddr, secs: u64) {
        let mut r = msg(MessageClass::SuccessResponse, ALLOCATE, 0);
        r.add_attribute(XorRelayAddress::new(relayed));
        r.add_attribute(Lifetime::new(Duration::from_secs(secs)).unwrap());
        m.response(client, &r);
    }

    fn bind(m: &Mirror, client: SocketAddr, number: u16, peer: SocketAddr, id: u8, ok: bool) {
        let mut q = msg(MessageClass::Request, CHANNEL_BIND, id);
        q.add_attribute(ChannelNumber::new(number).unwrap());
        q.add_attribute(XorPeerAddress::new(peer));
        m.request(client, &q);
        let class = if ok {
            MessageClass::SuccessResponse
        } else {
            MessageClass::ErrorResponse
        };
        m.response(client, &msg(class, CHANNEL_BIND, id));
    }

    const C: &str = "10.0.0.1:1000";
    const D: &str = "10.0.0.2:2000";
    const RC: &str = "192.0.2.1:50001";
    const RD: &str = "192.0.2.1:50002";

    fn pair(m: &Mirror) {
        allocated(m, addr(C), addr(RC), 600);
        allocated(m, addr(D), addr(RD), 600);
        bind(m, addr(C), 0x4001, addr(RD), 1, true);
        bind(m, addr(D), 0x4002, addr(RC), 2, true);
    }

    #[test]
    fn both_sides_must_bind() {
        let m = Mirror::default();
        allocated(&m, addr(C), addr(RC), 600);
        allocated(&m, addr(D), addr(RD), 600);
        bind(&m, addr(C), 0x4001, addr(RD), 1, true);
        assert_eq!(m.route(addr(C), 0x4001), None, "D has no channel back");
        // A refused bind teaches nothing.
        bind(&m, addr(D), 0x4002, addr(RC), 2, false);
        assert_eq!(m.route(addr(C), 0x4001), None);
        bind(&m, addr(D), 0x4002, addr(RC), 3, true);
        assert_eq!(m.route(addr(C), 0x4001), Some((addr(D), 0x4002)));
        assert_eq!(m.route(addr(D), 0x4002), Some((addr(C), 0x4001)));
        assert_eq!(m.route(addr(C), 0x4002), None, "unbound number");
    }

    #[test]
    fn a_response_without_its_request_teaches_nothing() {
        let m = Mirror::default();
        allocated(&m, addr(C), addr(RC), 600);
        allocated(&m, addr(D), addr(RD), 600);
        bind(&m, addr(C), 0x4001, addr(RD), 1, true);
        m.response(
            addr(D),
            &msg(MessageClass::SuccessResponse, CHANNEL_BIND, 9),
        );
        assert_eq!(m.route(addr(C), 0x4001), None);
    }

    #[test]
    fn one_transaction_id_for_two_requests_teaches_nothing() {
        let m = Mirror::default();
        allocated(&m, addr(C), addr(RC), 600);
        allocated(&m, addr(D), addr(RD), 600);
        bind(&m, addr(D), 0x4002, addr(RC), 2, true);
        let mut q = msg(MessageClass::Request, CHANNEL_BIND, 1);
        q.add_attribute(ChannelNumber::new(0x4001).unwrap());
        q.add_attribute(XorPeerAddress::new(addr("192.0.2.1:50003")));
        m.request(addr(C), &q);
        bind(&m, addr(C), 0x4001, addr(RD), 1, true);
        assert_eq!(m.route(addr(C), 0x4001), None);
    }

    #[test]
    fn deletion_and_expiry_end_the_shortcut() {
        let m = Mirror::default();
        pair(&m);
        let mut r = msg(MessageClass::SuccessResponse, REFRESH, 5);
        r.add_attribute(Lifetime::new(Duration::ZERO).unwrap());
        m.response(addr(D), &r);
        assert_eq!(m.route(addr(C), 0x4001), None);
        assert!(!m.state().by_relayed.contains_key(&addr(RD)));

        // Within the margin of its end, an allocation counts as gone.
        let m = Mirror::default();
        pair(&m);
        let mut r = msg(MessageClass::SuccessResponse, REFRESH, 6);
        r.add_attribute(Lifetime::new(MARGIN).unwrap());
        m.response(addr(D), &r);
        assert_eq!(m.route(addr(C), 0x4001), None);
    }

    #[test]
    fn entries_expire_before_the_crates() {
        let now = Instant::now();
        assert!(expiry(now, CHANNEL_LIFETIME) < now + CHANNEL_LIFETIME);
        assert!(expiry(now, PERMISSION_LIFETIME) <= now + PERMISSION_LIFETIME - MARGIN);
        let m = Mirror::default();
        pair(&m);
        {
            let mut s = m.state();
            let d = s.allocs.get_mut(&addr(D)).unwrap();
            let p = d.permissions.get_mut(&addr(RC).ip()).unwrap();
            *p = Instant::now();
        }
        assert_eq!(m.route(addr(C), 0x4001), None, "expired permission");
    }

    #[test]
    fn pending_requests_are_bounded() {
        let m = Mirror::default();
        allocated(&m, addr(C), addr(RC), 600);
        for id in 0..50u8 {
            let mut q = msg(MessageClass::Request, CREATE_PERMISSION, id);
            q.add_attribute(XorPeerAddress::new(addr(RD)));
            m.request(addr(C), &q);
        }
        assert_eq!(m.state().pending.len(), PENDING_PER_CLIENT);
        // A client without an allocation leaves nothing behind.
        let mut q = msg(MessageClass::Request, CREATE_PERMISSION, 99);
        q.add_attribute(XorPeerAddress::new(addr(RD)));
        m.request(addr(D), &q);
        assert_eq!(m.state().pending.len(), PENDING_PER_CLIENT);
    }

    #[test]
    fn channels_per_allocation_are_bounded() {
        let m = Mirror::default();
        allocated(&m, addr(C), addr(RC), 600);
        for i in 0..(MAX_CHANNELS as u16 + 10) {
            let peer = SocketAddr::from(([192, 0, 2, 7], 1000 + i));
            bind(&m, addr(C), 0x4000 + i, peer, (i % 200) as u8, true);
        }
        let s = m.state();
        let a = s.allocs.get(&addr(C)).unwrap();
        assert_eq!(a.channels.len(), MAX_CHANNELS);
        assert!(a.permissions.len() <= MAX_PERMISSIONS);
    }
}
