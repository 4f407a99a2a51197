//! UDP socket buffers for the ICE sockets.
//!
//! Linux's default UDP receive buffer (about 208 KiB) overflows on the bursts SCTP sends, and
//! SCTP recovers slowly from the losses: throughput falls from ~200 MB/s to 5–40 MB/s. The
//! WebRTC stack binds its own sockets, so the buffers are raised in the runtime hook that
//! wraps every UDP socket it creates.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// The tokio runtime of `webrtc`, plus `SO_RCVBUF`/`SO_SNDBUF` on every UDP socket.
#[derive(Debug)]
pub(crate) struct BufferedRuntime {
    inner: TokioRuntime,
    udp_buffer: usize,
}

impl BufferedRuntime {
    pub(crate) fn new(udp_buffer: usize) -> Self {
        BufferedRuntime {
            inner: TokioRuntime,
            udp_buffer,
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
        self.inner.sleep(duration)
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
        "tokio+udp-buffers"
    }
}
