//! The wrapper around each of the crate's transports that checks every request before the
//! crate sees it and counts every packet it relays (see the module documentation of `turn`).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medea_turn::attr::{
    Attribute, ChannelNumber, Data, ErrorCode, Lifetime, MessageIntegrity, Realm, Username,
    XorPeerAddress, XorRelayAddress,
};
use medea_turn::transport::{self, Request, Transport};
use secrecy::SecretString;
use stun_codec::rfc5389::errors::Unauthorized;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::errors::{AllocationQuotaReached, Forbidden};
use stun_codec::rfc5766::methods::{ALLOCATE, DATA, REFRESH, SEND};
use stun_codec::{Message, MessageClass};
use tokio::net::UdpSocket;

use super::gate::{Gate, Reserve};
use super::shortcut::Mirror;
use super::{Refusal, StreamTransport, Via, buffers};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The crate's view of credentials: the password of a REST username. Requests reach it only
/// after [`Guarded`] checked them, so this is a second, identical check.
pub(super) struct RestAuth {
    pub(super) gate: Arc<Gate>,
}

impl medea_turn::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src: SocketAddr,
    ) -> Result<SecretString, medea_turn::Error> {
        self.gate
            .password(username)
            .map(|(p, _)| SecretString::from(p))
            .ok_or(medea_turn::Error::NoSuchUser)
    }
}

/// The listening UDP socket, with what the shortcut needs.
pub(super) struct Udp {
    socket: Arc<UdpSocket>,
    /// Each datagram is peeked at into this before the crate or the shortcut reads it.
    buf: tokio::sync::Mutex<Vec<u8>>,
    mirror: Mirror,
}

/// One of the relay's transports.
pub(super) enum Inner {
    /// The UDP socket itself: its datagrams are peeked at before the crate reads them.
    Udp(Box<Udp>),
    /// TURN over TCP on the relay's port, or over TLS on the signalling server's listener.
    Stream(Arc<StreamTransport>),
}

/// One of the crate's transports, behind our checks (see the module's documentation).
pub(super) struct Guarded {
    pub(super) inner: Inner,
    pub(super) gate: Arc<Gate>,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("local_addr", &self.transport().local_addr())
            .field("via", &self.via())
            .finish_non_exhaustive()
    }
}

/// What became of a datagram peeked at on the UDP socket.
enum Peeked {
    /// Passed on between two allocations (or dropped on the way): consumed.
    Shortcut,
    /// Left for the crate to read; for ChannelData, the size of its payload.
    Crate(Option<usize>),
}

/// What to do with a request.
enum Verdict {
    Pass,
    Drop,
    Refuse(ErrorCode, Refusal),
}

/// The most the crate reads of a UDP datagram (its `INBOUND_MTU`): the shortcut reads as much.
const UDP_READ: usize = 1500;

impl Inner {
    pub(super) fn udp(socket: Arc<UdpSocket>) -> Inner {
        Inner::Udp(Box::new(Udp {
            socket,
            buf: tokio::sync::Mutex::new(vec![0; UDP_READ]),
            mirror: Mirror::default(),
        }))
    }
}

impl Guarded {
    fn transport(&self) -> &(dyn Transport + Send + Sync) {
        match &self.inner {
            Inner::Udp(udp) => &*udp.socket,
            Inner::Stream(stream) => &**stream,
        }
    }

    fn via(&self) -> Via {
        match &self.inner {
            Inner::Udp(_) => Via::Udp,
            Inner::Stream(stream) => stream.via(),
        }
    }

    /// The next request, its sender, and for ChannelData the size of its payload when the
    /// transport tells it.
    async fn next(&self) -> Result<(Request, SocketAddr, Option<usize>), transport::Error> {
        match &self.inner {
            Inner::Udp(udp) => loop {
                let channel_len = match self.peek_udp(udp).await {
                    Peeked::Shortcut => continue,
                    Peeked::Crate(len) => len,
                };
                let (req, from) = Transport::recv_from(&*udp.socket).await?;
                return Ok((req, from, channel_len));
            },
            Inner::Stream(stream) => stream.recv_sized().await,
        }
    }

    /// Peeks at the next datagram. ChannelData from one client of this relay to another, over
    /// channels both bound and a permission the receiver holds (as the mirror has them), is
    /// consumed and sent on here as the crate would have sent it through the two relayed
    /// sockets; anything else is left for the crate.
    async fn peek_udp(&self, udp: &Udp) -> Peeked {
        // The header alone first: most datagrams are left for the crate, and copying each
        // whole one only to look at it cost a copy per packet.
        let mut head = [0u8; 4];
        let Ok((n, from)) = udp.socket.peek_from(&mut head).await else {
            return Peeked::Crate(None);
        };
        let (number, len) = match head {
            [a, b, c, d] if n >= 4 && (0x40..=0x7f).contains(&a) => (
                u16::from_be_bytes([a, b]),
                usize::from(u16::from_be_bytes([c, d])),
            ),
            _ => return Peeked::Crate(None),
        };
        if !(ChannelNumber::MIN..=ChannelNumber::MAX).contains(&number) {
            return Peeked::Crate(Some(len));
        }
        let Some((to, back)) = udp.mirror.route(from, number) else {
            return Peeked::Crate(Some(len));
        };
        let mut buf = udp.buf.lock().await;
        // Only this task reads the socket, so the datagram peeked at is the next one.
        match udp.socket.try_recv_from(&mut buf) {
            Ok((m, f)) if m >= 4 && f == from && buf.get(..4) == Some(&head[..]) => {
                // Only what the crate itself decodes as ChannelData (within the bytes it
                // reads); it would drop the rest, and so does the shortcut.
                if len > m - 4 {
                    return Peeked::Shortcut;
                }
            }
            Ok((_, f)) => {
                tracing::debug!("turn: shortcut read another datagram than it peeked at ({f})");
                return Peeked::Shortcut;
            }
            Err(_) => return Peeked::Crate(Some(len)),
        }
        if !self.gate.relayed((Via::Udp, from), len, false)
            || !self.gate.relayed((Via::Udp, to), len, true)
        {
            return Peeked::Shortcut;
        }
        let end = 4 + len;
        let padded = end.next_multiple_of(4);
        if let Some(head) = buf.get_mut(..2) {
            head.copy_from_slice(&back.to_be_bytes());
        }
        if let Some(pad) = buf.get_mut(end..padded) {
            pad.fill(0);
        }
        let Some(out) = buf.get(..padded) else {
            return Peeked::Shortcut;
        };
        match udp.socket.send_to(out, to).await {
            Ok(_) => self.gate.metrics.shortcut(),
            Err(e) => tracing::debug!("turn: shortcut to {to}: {e}"),
        }
        Peeked::Shortcut
    }

    async fn refuse(&self, msg: &Message<Attribute>, code: ErrorCode, to: SocketAddr) {
        let mut reply = Message::new(
            MessageClass::ErrorResponse,
            msg.method(),
            msg.transaction_id(),
        );
        reply.add_attribute(code);
        if let Err(e) = self.transport().send_msg_to(reply, to).await {
            tracing::debug!("turn: cannot answer {to}: {e}");
        }
    }

    fn judge(&self, msg: &Message<Attribute>, from: SocketAddr) -> Verdict {
        let (method, class) = (msg.method(), msg.class());
        if class != MessageClass::Request {
            // Send indications are checked by the crate against the allocation; anything else
            // (responses, other indications) it ignores.
            return Verdict::Pass;
        }
        if method == BINDING {
            return Verdict::Pass;
        }
        let Some(integrity) = msg.get_attribute::<MessageIntegrity>() else {
            // The first request of a client: the crate answers 401 with a nonce it remembers.
            return if self.gate.allow_challenge(from) {
                Verdict::Pass
            } else {
                self.gate.metrics.refuse(Refusal::RateLimited);
                Verdict::Drop
            };
        };
        let (Some(username), Some(realm)) = (
            msg.get_attribute::<Username>(),
            msg.get_attribute::<Realm>(),
        ) else {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        };
        let Some((password, expiry)) = self.gate.password(username.name()) else {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        };
        if integrity
            .check_long_term_credential(username, realm, &password)
            .is_err()
        {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        }
        if let Some(peer) = msg.get_attribute::<XorPeerAddress>()
            && !self.gate.peer_allowed(peer.address())
        {
            return Verdict::Refuse(Forbidden.into(), Refusal::ForbiddenPeer);
        }
        if method == ALLOCATE {
            if expiry <= unix_now() {
                return Verdict::Refuse(Unauthorized.into(), Refusal::Expired);
            }
            match self.gate.reserve((self.via(), from), username.name()) {
                Reserve::Ok | Reserve::Existing => {}
                Reserve::OverQuota => {
                    return Verdict::Refuse(AllocationQuotaReached.into(), Refusal::Quota);
                }
            }
        }
        Verdict::Pass
    }
}

#[async_trait::async_trait]
impl Transport for Guarded {
    async fn recv_from(&self) -> Result<(Request, SocketAddr), transport::Error> {
        let via = self.via();
        loop {
            let (req, from, channel_len) = self.next().await?;
            match &req {
                Request::ChannelData(_) => {
                    if let Some(n) = channel_len
                        && !self.gate.relayed((via, from), n, false)
                    {
                        continue;
                    }
                    return Ok((req, from));
                }
                Request::Message(msg) => {
                    if msg.method() == SEND && msg.class() == MessageClass::Indication {
                        if let Some(peer) = msg.get_attribute::<XorPeerAddress>()
                            && !self.gate.peer_allowed(peer.address())
                        {
                            self.gate.metrics.refuse(Refusal::ForbiddenPeer);
                            continue;
                        }
                        let n = msg.get_attribute::<Data>().map_or(0, |d| d.data().len());
                        if !self.gate.relayed((via, from), n, false) {
                            continue;
                        }
                        return Ok((req, from));
                    }
                    match self.judge(msg, from) {
                        Verdict::Pass => {
                            if let Inner::Udp(udp) = &self.inner {
                                udp.mirror.request(from, msg);
                            }
                            return Ok((req, from));
                        }
                        Verdict::Drop => continue,
                        Verdict::Refuse(code, why) => {
                            self.gate.metrics.refuse(why);
                            self.refuse(msg, code, from).await;
                            continue;
                        }
                    }
                }
            }
        }
    }

    async fn send_to(
        &self,
        data: Cow<'_, [u8]>,
        target: SocketAddr,
    ) -> Result<(), transport::Error> {
        // What the crate sends through here is ChannelData from a peer (its STUN messages go
        // through `send_msg_to`).
        if data.len() >= 4 && (0x40..=0x7f).contains(&data[0]) {
            let n = usize::from(u16::from_be_bytes([data[2], data[3]]));
            if !self.gate.relayed((self.via(), target), n, true) {
                return Ok(());
            }
        }
        self.transport().send_to(data, target).await
    }

    async fn send_msg_to(
        &self,
        msg: Message<Attribute>,
        dst: SocketAddr,
    ) -> Result<(), transport::Error> {
        let key = (self.via(), dst);
        let (method, class) = (msg.method(), msg.class());
        if let Inner::Udp(udp) = &self.inner {
            udp.mirror.response(dst, &msg);
        }
        if method == ALLOCATE {
            match class {
                MessageClass::SuccessResponse => {
                    self.gate.allocated(
                        key,
                        Some(
                            msg.get_attribute::<Lifetime>()
                                .map_or(Duration::from_secs(600), Lifetime::lifetime),
                        ),
                    );
                    // Over every transport. Over TCP and TLS a peer's bursts wait here and
                    // in the connection's queue (`stream.rs`) while the stream drains; with
                    // the defaults here a burst's tail was lost, and SCTP waited for its
                    // retransmission timer.
                    if let Some(relayed) = msg.get_attribute::<XorRelayAddress>() {
                        let port = relayed.address().port();
                        tokio::task::spawn_blocking(move || {
                            match buffers::raise(port, buffers::RELAY_BUFFER) {
                                Ok(true) => {}
                                Ok(false) => tracing::debug!(port, "relayed socket not found"),
                                Err(e) => buffers::could_not_raise(port, &e),
                            }
                        });
                    }
                }
                MessageClass::ErrorResponse => self.gate.allocated(key, None),
                _ => {}
            }
        } else if method == REFRESH && class == MessageClass::SuccessResponse {
            if let Some(l) = msg.get_attribute::<Lifetime>() {
                self.gate.refreshed(key, l.lifetime());
            }
        } else if method == DATA && class == MessageClass::Indication {
            let n = msg.get_attribute::<Data>().map_or(0, |d| d.data().len());
            if !self.gate.relayed(key, n, true) {
                return Ok(());
            }
        }
        self.transport().send_msg_to(msg, dst).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.transport().local_addr()
    }

    fn proto(&self) -> u8 {
        self.transport().proto()
    }
}
