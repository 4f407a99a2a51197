//! UDP socket buffers for the ICE sockets.
//!
//! Linux's default UDP receive buffer (about 208 KiB) overflows on the bursts SCTP sends, and
//! SCTP recovers slowly from the losses: throughput falls from ~200 MB/s to 5–40 MB/s. The
//! WebRTC stack binds its own sockets, so the buffers are raised in the runtime hook that
//! wraps every UDP socket it creates.
//!
//! The same hook also shortens the stack's timer while a connection is being set up. The
//! stack's event loop only flushes what an event queued (the DTLS hello once ICE has chosen a
//! pair, SCTP's INIT once DTLS is up, a channel's OPEN) when it next wakes, and its timer is
//! the 200 ms ICE check interval: opening took 600–900 ms of waiting, not work. With the timer
//! capped at 1 ms during setup, each step leaves as soon as the previous one is done.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
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
        self.inner.wrap_udp_socket(socket)
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
