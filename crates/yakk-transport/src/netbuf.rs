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

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl SetupClock {
    /// Quick for `span` from now.
    pub(crate) fn new(span: Duration) -> Arc<Self> {
        let clock = Arc::new(SetupClock {
            base: Instant::now(),
            quick_until: AtomicU64::new(0),
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
        Ok(Arc::new(GsoCapped(self.inner.wrap_udp_socket(socket)?)))
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
/// anything but a unicast address dropped ([`is_unicast`]).
#[derive(Debug)]
struct GsoCapped(Arc<dyn AsyncUdpSocket>);

impl AsyncUdpSocket for GsoCapped {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if !is_unicast(transmit.destination.ip()) {
            // Reported as sent: to the stack, a datagram lost on the way.
            tracing::debug!(to = %transmit.destination, "not sending to a non-unicast address");
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.0.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        self.0.max_gso_segments().min(GSO_SEGMENTS_CAP)
    }

    fn max_gro_segments(&self) -> usize {
        self.0.max_gro_segments()
    }
}

#[cfg(test)]
mod gso_tests {
    use super::*;

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
