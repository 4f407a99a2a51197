//! ykb-netem: joins two TUN devices with a one-way delay, random loss and a rate limit in each
//! direction, like `tc qdisc ... netem delay D loss L rate R` on both ends of a veth pair.
//!
//! It exists because the benchmark machine's kernel has no `sch_netem`. Usage:
//!
//! ```text
//! ykb-netem --a ykbA0 --b ykbB0 [--control PATH]
//! ```
//!
//! It creates both devices (in the current network namespace; the caller moves them into the
//! namespaces), prints `ready`, and then forwards every packet read from one device to the
//! other. The parameters are read from the control file (`delay_ms loss_percent rate_mbit`,
//! one line) whenever it changes, so one emulator serves several conditions. The devices
//! vanish when the process exits.
//!
//! Model per direction: a packet arriving at time t leaves the "wire" at
//! max(t, previous departure) + size / rate, and is delivered `delay` after that; it is dropped
//! with probability `loss` (before queueing), or when more than `QUEUE_LIMIT` packets wait.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const QUEUE_LIMIT: usize = 100_000;

#[derive(Default)]
struct Params {
    delay_us: AtomicU64,
    loss_ppm: AtomicU64,
    rate_kbit: AtomicU64,
}

fn open_tun(name: &str) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // struct ifreq: 16 bytes of name, then a short of flags, padded to 40 bytes.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq; `ifr` is 40 bytes, the size of ifreq.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x400454ca, ifr.as_mut_ptr()) };
    if r < 0 {
        panic!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    f
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn direction(mut from: File, to: File, p: Arc<Params>, seed: u64, stats: Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let queued = Arc::new(AtomicUsize::new(0));
    let q2 = queued.clone();
    std::thread::spawn(move || {
        let mut to = to;
        for (due, pkt) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            q2.fetch_sub(1, Ordering::Relaxed);
            let _ = to.write(&pkt);
        }
    });
    let mut rng = Rng(seed | 1);
    let mut wire_free = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let loss = p.loss_ppm.load(Ordering::Relaxed);
        if loss > 0 && rng.next() % 1_000_000 < loss {
            stats.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if queued.load(Ordering::Relaxed) >= QUEUE_LIMIT {
            stats.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let rate = p.rate_kbit.load(Ordering::Relaxed).max(1);
        let tx_time = Duration::from_nanos(n as u64 * 8 * 1_000_000 / rate);
        wire_free = wire_free.max(now) + tx_time;
        let due = wire_free + Duration::from_micros(p.delay_us.load(Ordering::Relaxed));
        queued.fetch_add(1, Ordering::Relaxed);
        if tx.send((due, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let a = arg("--a").unwrap_or_else(|| "ykbA0".into());
    let b = arg("--b").unwrap_or_else(|| "ykbB0".into());
    let control = arg("--control");
    let p = Arc::new(Params::default());
    p.rate_kbit.store(1_000_000, Ordering::Relaxed);
    let ta = open_tun(&a);
    let tb = open_tun(&b);
    let drops = Arc::new(AtomicU64::new(0));
    for (i, (from, to)) in [
        (ta.try_clone().unwrap(), tb.try_clone().unwrap()),
        (tb, ta),
    ]
    .into_iter()
    .enumerate()
    {
        let (p, d) = (p.clone(), drops.clone());
        std::thread::spawn(move || direction(from, to, p, 0x9e37_79b9_7f4a_7c15 + i as u64, d));
    }
    // The parent going away (stdin closed) ends the emulator, and with it both devices.
    let d = drops.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        eprintln!("drops: {}", d.load(Ordering::Relaxed));
        std::process::exit(0);
    });
    println!("ready");
    let mut last = String::new();
    loop {
        if let Some(path) = &control {
            if let Ok(s) = std::fs::read_to_string(path) {
                if s != last {
                    let v: Vec<f64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                    if v.len() == 3 {
                        p.delay_us.store((v[0] * 1000.0) as u64, Ordering::Relaxed);
                        p.loss_ppm.store((v[1] * 10_000.0) as u64, Ordering::Relaxed);
                        p.rate_kbit.store((v[2] * 1000.0) as u64, Ordering::Relaxed);
                        println!("set {}", s.trim());
                    }
                    last = s;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
