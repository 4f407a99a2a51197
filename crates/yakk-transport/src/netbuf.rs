//! UDP socket buffers for the ICE sockets.
//!
//! Linux's default UDP receive buffer (about 208 KiB) overflows on the bursts SCTP sends, and
//! SCTP recovers slowly from the losses: throughput falls from ~200 MB/s to 5–40 MB/s. The
//! WebRTC stack binds its own sockets, so the buffers are raised in the runtime hook that
//! wraps every UDP socket it creates.
//!
//! The same hook keeps every datagram to unicast addresses: a send to a multicast, broadcast
//! or unspecified address is dropped (see [`is_unicast`]), whoever asked for it (a peer's
//! candidate, an ICE server a signalling server advertised).
//!
//! The same hook also shortens the stack's timer while a connection is being set up. The
//! stack's event loop only flushes what an event queued (the DTLS hello once ICE has chosen a
//! pair, SCTP's INIT once DTLS is up, a channel's OPEN) when it next wakes, and its timer is
//! the 200 ms ICE check interval: opening took 600–900 ms of waiting, not work. With the timer
//! capped at 1 ms during setup, each step leaves as soon as the previous one is done.
//!
//! On a relayed path the same flaw costs every packet, for as long as the connection lives.
//! The stack's loop hands what its core wants to send through a TURN allocation to its TURN
//! client, and sends the TURN client's queue at the start of the loop, before the core's: so a
//! relayed packet leaves only when the loop next wakes (webrtc 0.21.1,
//! `PeerConnectionDriver::poll_writes`). A SACK waited for the next data packet or timer, and
//! the round trip through a relay on loopback was 10 ms. Once a connection's own end of the
//! selected pair is a relay candidate ([`SetupClock::relayed`]), the hook therefore ends the
//! loop's next sleep at once after any wake, and again for as long as the socket moved
//! datagrams since, so the TURN client's queue goes out in the pass that follows.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::io::IoSliceMut;
use std::task::{Context, Poll};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// The longest the stack's event loop sleeps while setup is quick.
pub(crate) const SETUP_TICK: Duration = Duration::from_millis(1);

/// Until when the stack's sleeps are capped at [`SETUP_TICK`]: shared by a peer and its
/// runtime.
#[derive(Debug)]
pub(crate) struct SetupClock {
    base: Instant,
    /// Nanoseconds after `base` until which sleeps are capped.
    quick_until: AtomicU64,
    /// The connection sends through its own TURN allocation: flush the TURN client's queue.
    relayed: AtomicBool,
    /// A datagram was sent or received since the last sleep.
    moved: AtomicBool,
    /// The last sleep was ended at once to flush the TURN client's queue.
    flushed: AtomicBool,
}

impl SetupClock {
    /// Quick for `span` from now.
    pub(crate) fn new(span: Duration) -> Arc<Self> {
        let clock = Arc::new(SetupClock {
            base: Instant::now(),
            quick_until: AtomicU64::new(0),
            relayed: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            flushed: AtomicBool::new(false),
        });
        clock.quick_for(span);
        clock
    }

    /// Stay quick for `span` from now (and no longer, even if set further before).
    pub(crate) fn quick_for(&self, span: Duration) {
        let until = self.base.elapsed().saturating_add(span).as_nanos() as u64;
        self.quick_until.store(until, Ordering::Relaxed);
    }

    pub(crate) fn is_quick(&self) -> bool {
        (self.base.elapsed().as_nanos() as u64) < self.quick_until.load(Ordering::Relaxed)
    }

    /// The connection's end of its selected pair is (or is no longer) a relay candidate.
    pub(crate) fn relayed(&self, relayed: bool) {
        self.relayed.store(relayed, Ordering::Relaxed);
    }

    /// A socket of the connection sent or received a datagram.
    fn moved(&self) {
        if self.relayed.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the loop's next sleep should end at once, so that its next pass sends what it
    /// queued for the TURN client in this one: after every wake that was not such a flush, and
    /// after a flush that moved datagrams (it may have queued more). A flush that moved
    /// nothing leaves the next sleep alone, so an idle connection sleeps as long as the stack
    /// asks.
    fn flush_now(&self) -> bool {
        if !self.relayed.load(Ordering::Relaxed) {
            return false;
        }
        let moved = self.moved.swap(false, Ordering::Relaxed);
        let flush = moved || !self.flushed.load(Ordering::Relaxed);
        self.flushed.store(flush, Ordering::Relaxed);
        flush
    }

    /// The sleep to actually take for a requested one.
    pub(crate) fn cap(&self, wanted: Duration) -> Duration {
        if self.is_quick() {
            wanted.min(SETUP_TICK)
        } else {
            wanted
        }
    }
}

/// The tokio runtime of `webrtc`, plus `SO_RCVBUF`/`SO_SNDBUF` on every UDP socket and the
/// setup-time cap on sleeps.
#[derive(Debug)]
pub(crate) struct BufferedRuntime {
    inner: TokioRuntime,
    udp_buffer: usize,
    clock: Arc<SetupClock>,
}

impl BufferedRuntime {
    pub(crate) fn new(udp_buffer: usize, clock: Arc<SetupClock>) -> Self {
        BufferedRuntime {
            inner: TokioRuntime,
            udp_buffer,
            clock,
        }
    }
}

/// Raise both buffers of a UDP socket; failures only cost speed, so they are logged.
pub(crate) fn set_udp_buffers(socket: &std::net::UdpSocket, size: usize) {
    if size == 0 {
        return;
    }
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(size) {
        tracing::warn!("could not set SO_RCVBUF to {size}: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(size) {
        tracing::warn!("could not set SO_SNDBUF to {size}: {e}");
    }
}

impl Runtime for BufferedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        set_udp_buffers(&socket, self.udp_buffer);
        Ok(Arc::new(GsoCapped {
            inner: self.inner.wrap_udp_socket(socket)?,
            clock: self.clock.clone(),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        // Waking early is harmless: the stack re-checks its timers and sleeps again.
        if self.clock.flush_now() {
            return Box::pin(std::future::ready(()));
        }
        self.inner.sleep(self.clock.cap(duration))
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio+udp-buffers+quick-setup"
    }
}

/// Datagrams the stack may hand the kernel in one UDP GSO send. The stack batches up to 64
/// datagrams and 65535 bytes, but the kernel takes at most 65507 bytes of UDP payload over
/// IPv4 in one send: a batch between the two fails whole ("Message too long") and every
/// datagram in it is lost. Under load (many channels, several lanes) that happened often
/// enough, and for the same packets again and again, that an SCTP association gave up
/// ("T3-rtx retransmission failure") on loopback. 48 datagrams of up to 1364 bytes (the
/// stack sends at most about 1230) stay below the limit.
const GSO_SEGMENTS_CAP: usize = 48;
// A full batch of 1364-byte datagrams fits one IPv4 UDP send (65507 bytes).
const _: () = assert!(GSO_SEGMENTS_CAP * 1364 <= 65_507);

/// Whether yakk may send a datagram to `ip`: only to one host. Multicast (224.0.0.0/4,
/// ff00::/8, e.g. mDNS's 224.0.0.251), the limited broadcast 255.255.255.255 and the
/// unspecified addresses are refused, also in their IPv4-mapped IPv6 form. ICE has no use for
/// them, and a hostile peer or signalling server could otherwise make a peer spray the local
/// network.
pub(crate) fn is_unicast(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// The runtime's UDP socket, with GSO batches capped at [`GSO_SEGMENTS_CAP`] and sends to
/// anything but a unicast address dropped ([`is_unicast`]); it tells the clock when datagrams
/// move ([`SetupClock::relayed`]).
#[derive(Debug)]
struct GsoCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    clock: Arc<SetupClock>,
}

impl AsyncUdpSocket for GsoCapped {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if !is_unicast(transmit.destination.ip()) {
            // Reported as sent: to the stack, a datagram lost on the way.
            tracing::debug!(to = %transmit.destination, "not sending to a non-unicast address");
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        let sent = self.inner.poll_send(cx, transmit);
        if sent.is_ready() {
            self.clock.moved();
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let got = self.inner.poll_recv(cx, bufs, meta);
        if matches!(got, Poll::Ready(Ok(_))) {
            self.clock.moved();
        }
        got
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments().min(GSO_SEGMENTS_CAP)
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod gso_tests {
    use super::*;

    /// The relayed-path flush: off until the connection's end is a relay candidate; then the
    /// sleep after each wake ends at once, and so does the next one while a flush moves
    /// datagrams, and an idle connection sleeps as asked.
    #[test]
    fn a_relayed_connection_flushes_after_each_wake_until_a_flush_moves_nothing() {
        let clock = SetupClock::new(Duration::ZERO);
        assert!(!clock.flush_now(), "a direct connection sleeps as asked");
        clock.moved();
        assert!(!clock.flush_now(), "a direct connection sleeps as asked");
        clock.relayed(true);
        assert!(
            clock.flush_now(),
            "the first sleep after a wake ends at once"
        );
        clock.moved();
        assert!(
            clock.flush_now(),
            "a flush that sent something is followed by another"
        );
        assert!(!clock.flush_now(), "a flush that moved nothing: sleep");
        assert!(clock.flush_now(), "the next wake flushes again");
        assert!(
            !clock.flush_now(),
            "and an idle connection goes back to sleep"
        );
        clock.relayed(false);
        clock.moved();
        assert!(!clock.flush_now(), "no longer relayed: sleeps as asked");
    }

    /// The runtime's sleep ends at once when a flush is due, and sleeps otherwise; the wrapped
    /// socket's sends and receives count as datagrams moved.
    #[tokio::test]
    async fn the_runtime_ends_a_sleep_for_a_flush_and_the_socket_counts_datagrams() {
        let clock = SetupClock::new(Duration::ZERO);
        let rt = BufferedRuntime::new(0, clock.clone());
        let long = Duration::from_secs(3600);
        let short = Duration::from_millis(50);
        let ended = |f| tokio::time::timeout(short, f);
        assert!(ended(rt.sleep(long)).await.is_err(), "direct: sleeps");
        clock.relayed(true);
        assert!(
            ended(rt.sleep(long)).await.is_ok(),
            "relayed: flushes at once"
        );
        assert!(
            ended(rt.sleep(long)).await.is_err(),
            "nothing moved: sleeps"
        );
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let wrapped = rt.wrap_udp_socket(a).unwrap();
        assert!(
            ended(rt.sleep(long)).await.is_ok(),
            "the wake after a sleep flushes"
        );
        wrapped.send_to(b"x", to).await.unwrap();
        assert!(
            ended(rt.sleep(long)).await.is_ok(),
            "a send during the flush: again"
        );
        assert!(
            ended(rt.sleep(long)).await.is_err(),
            "nothing moved: sleeps"
        );
    }

    #[tokio::test]
    async fn the_wrapped_socket_reports_at_most_the_cap() {
        let rt = BufferedRuntime::new(0, SetupClock::new(Duration::ZERO));
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let inner = rt.inner.wrap_udp_socket(sock.try_clone().unwrap()).unwrap();
        let wrapped = rt.wrap_udp_socket(sock).unwrap();
        let n = wrapped.max_gso_segments();
        assert!((1..=GSO_SEGMENTS_CAP).contains(&n), "{n}");
        // Where the kernel has GSO (Linux), the stack's own socket offers more than the cap.
        assert_eq!(n, inner.max_gso_segments().min(GSO_SEGMENTS_CAP));
    }

    #[test]
    fn only_unicast_destinations() {
        for ok in [
            "127.0.0.1",
            "192.0.2.7",
            "10.0.0.255",
            "::1",
            "2001:db8::1",
            "fe80::1",
        ] {
            assert!(is_unicast(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "0.0.0.0",
            "ff02::fb",
            "ff05::1:3",
            "::",
            "::ffff:224.0.0.251",
            "::ffff:255.255.255.255",
        ] {
            assert!(!is_unicast(bad.parse().unwrap()), "{bad}");
        }
    }

    /// The wrapped socket drops datagrams to a multicast group and to the broadcast address,
    /// and still delivers unicast ones. The group is joined on loopback with TTL 0, so even the
    /// unguarded send of the control below never leaves this host.
    #[tokio::test]
    async fn the_wrapped_socket_sends_to_no_multicast_or_broadcast_address() {
        use std::net::{Ipv4Addr, UdpSocket};
        let group = Ipv4Addr::new(239, 255, 77, 77);
        let rx = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let joined = rx.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).is_ok();
        let sender = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let s2 = socket2::SockRef::from(&s);
            s2.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
            s2.set_multicast_ttl_v4(0).unwrap();
            s
        };
        let got = |what: &str| {
            let mut buf = [0u8; 64];
            match rx.recv_from(&mut buf) {
                Ok((n, _)) => Some(buf[..n].to_vec()),
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ),
                        "{what}: {e}"
                    );
                    None
                }
            }
        };
        let to_group = SocketAddr::new(group.into(), port);
        if joined {
            // Control: the setup sees a multicast datagram when one is sent.
            sender().send_to(b"control", to_group).unwrap();
            assert_eq!(got("control").as_deref(), Some(&b"control"[..]));
        } else {
            eprintln!("cannot join a multicast group on loopback here: multicast part unchecked");
        }
        let rt = BufferedRuntime::new(0, SetupClock::new(Duration::ZERO));
        let s = sender();
        s.set_nonblocking(true).unwrap();
        let wrapped = rt.wrap_udp_socket(s).unwrap();
        // Without the guard the kernel refuses the broadcast (no SO_BROADCAST): an error.
        let bcast = SocketAddr::new(Ipv4Addr::BROADCAST.into(), port);
        assert_eq!(wrapped.send_to(b"bcast", bcast).await.unwrap(), 5);
        assert_eq!(wrapped.send_to(b"group", to_group).await.unwrap(), 5);
        if joined {
            assert_eq!(got("guarded"), None, "a multicast datagram went out");
        }
        let unicast = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        assert_eq!(wrapped.send_to(b"unicast", unicast).await.unwrap(), 7);
        assert_eq!(got("unicast").as_deref(), Some(&b"unicast"[..]));
    }
}
