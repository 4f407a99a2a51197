//! Socket buffers of the relay's allocations.
//!
//! The crate binds each allocation's UDP socket itself, with the kernel's default buffers
//! (`net.core.rmem_default`, about 208 KiB), and offers no hook to change them. A peer's SCTP
//! sends its congestion window in one burst; at the relayed socket that burst overflowed the
//! buffer, every drop halved the window, and a relayed path ran at 1-10 MiB/s where the same
//! peers reached 100 MiB/s directly (on loopback, 0.4-12 MiB/s through the relay with the default
//! buffers, 85 MiB/s with 4 MiB).
//!
//! So once an allocation exists, its socket is found and its buffers are raised from outside:
//! the UDP socket bound to the relayed port is found in `/proc/self/net/udp{,6}` (its inode),
//! its descriptor among `/proc/self/fd`, and a duplicate of that descriptor is taken with
//! `pidfd_getfd(2)` on this very process (allowed without privileges for one's own process,
//! Linux 5.6 and later). The duplicate shares the socket, so setting its buffers sets the
//! allocation's; it is checked to be a socket bound to that port first (the descriptor number
//! could have been reused meanwhile), then closed.

use std::io;

/// SO_RCVBUF/SO_SNDBUF for a relayed socket (Linux caps it at net.core.rmem_max / wmem_max).
pub(super) const RELAY_BUFFER: usize = 4 << 20;

/// Warns when the kernel caps socket buffers below `size` (`net.core.rmem_max`/`wmem_max`,
/// 208 KiB on most systems): the relay then loses packets in bursts, and relayed paths slow
/// down many times.
pub(super) fn warn_if_capped(size: usize) {
    for key in ["rmem_max", "wmem_max"] {
        let path = format!("/proc/sys/net/core/{key}");
        let Some(max) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            continue;
        };
        if max < size {
            tracing::warn!(
                "the kernel caps socket buffers at net.core.{key} = {max} bytes: relayed paths will \
                 lose packets in bursts and run slowly; raise it (sysctl -w net.core.{key}={size}, \
                 or deploy/sysctl.d/99-yakk-signal.conf)"
            );
        }
    }
}

/// Reports a failure of [`raise`]: once as a warning (a seccomp profile that denies
/// `pidfd_getfd`, as Docker's default one does without CAP_SYS_PTRACE, fails every time), then
/// at debug level.
pub(super) fn could_not_raise(port: u16, e: &io::Error) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(port, "relayed socket buffers: {e}");
    } else {
        tracing::warn!(
            port,
            "cannot raise the buffers of the relay's sockets ({e}): relayed paths will run slowly \
             (in a container, allow pidfd_getfd: see deploy/compose.yaml)"
        );
    }
}

/// Raises both buffers of this process's UDP socket bound to `port`. `Ok(false)` when no such
/// socket was found (the allocation is already gone).
pub(super) fn raise(port: u16, size: usize) -> io::Result<bool> {
    let inodes = udp_inodes(port)?;
    if inodes.is_empty() {
        return Ok(false);
    }
    let Some(fd) = descriptor_of(&inodes)? else {
        return Ok(false);
    };
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )?;
    let dup = rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())?;
    let sock = socket2::SockRef::from(&dup);
    let bound = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.port() == port);
    if !bound || sock.r#type()? != socket2::Type::DGRAM {
        return Ok(false);
    }
    sock.set_recv_buffer_size(size)?;
    sock.set_send_buffer_size(size)?;
    Ok(true)
}

/// The inodes of the UDP sockets bound to `port` in this network namespace.
fn udp_inodes(port: u16) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        inodes.extend(inodes_in(&text, port));
    }
    Ok(inodes)
}

/// The inode column of the rows of a `/proc/net/udp` table whose local port is `port`.
fn inodes_in(table: &str, port: u16) -> impl Iterator<Item = u64> + '_ {
    table.lines().skip(1).filter_map(move |row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let local_port = cols.get(1)?.rsplit_once(':')?.1;
        (u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| cols.get(9)?.parse().ok())
            .flatten()
    })
}

/// This process's descriptor of a socket with one of these inodes.
fn descriptor_of(inodes: &[u64]) -> io::Result<Option<i32>> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        if inode.is_some_and(|i| inodes.contains(&i)) {
            return Ok(entry.file_name().to_str().and_then(|n| n.parse().ok()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_the_port_give_their_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 12: 0100007F:A028 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 73421 2 0000000000000000 0\n\
             \x20 13: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 73999 2 0000000000000000 0\n";
        assert_eq!(inodes_in(table, 0xA028).collect::<Vec<_>>(), vec![73421]);
        assert_eq!(inodes_in(table, 3478).collect::<Vec<_>>(), vec![73999]);
        assert_eq!(inodes_in(table, 1).count(), 0);
    }

    /// A socket of this process, bound with the default buffers, gets the larger ones.
    #[test]
    fn the_socket_on_the_port_gets_the_buffers() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let before = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        let wanted = 1 << 20;
        match raise(port, wanted) {
            Ok(found) => assert!(found, "the socket on {port} was not found"),
            // Kernels before 5.6 have no pidfd_getfd: nothing to check there.
            Err(e) if e.raw_os_error() == Some(38) => return,
            Err(e) => panic!("{e}"),
        }
        let after = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        assert!(after > before, "{before} -> {after}");
        // Nothing bound on a port: nothing found, nothing changed.
        drop(sock);
        assert!(!raise(port, wanted).unwrap());
    }
}
