//! One complete J-PAKE exchange per protocol version, both sides: party creation with
//! round 1, round 2, key confirmation and its verification. Divide by two for one side.
//!
//! Each exchange is measured twice: wall-clock time (criterion's default), and CPU time
//! of the benchmark thread (from `/proc/thread-self/schedstat`, Linux only), which stays
//! meaningful on a machine shared with other builds.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn v1_exchange() -> [u8; 32] {
    use yakk_pake::v1::Party;
    let mut a = Party::new(black_box(b"correct horse"));
    let mut z = Party::new(black_box(b"correct horse"));
    let a2 = a.receive_round1(&z.round1()).unwrap();
    let z2 = z.receive_round1(&a.round1()).unwrap();
    let ac = a.receive_round2(&z2).unwrap();
    let zc = z.receive_round2(&a2).unwrap();
    a.verify_confirmation(&zc).unwrap();
    z.verify_confirmation(&ac).unwrap();
    *a.session_key().unwrap()
}

fn v2_exchange() -> [u8; 32] {
    use yakk_pake::v2::{Party, Role};
    let mut o = Party::new(Role::Owner, black_box(b"correct horse"), "room");
    let mut j = Party::new(Role::Joiner, black_box(b"correct horse"), "room");
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let j2 = j.receive_round1(&o.round1()).unwrap();
    let oc = o.receive_round2(&j2).unwrap();
    let jc = j.receive_round2(&o2).unwrap();
    let ko = o.verify_confirmation(&jc).unwrap();
    let kj = j.verify_confirmation(&oc).unwrap();
    assert_eq!(ko.signal_send_key(), kj.signal_recv_key());
    *ko.signal_send_key()
}

/// CPU time consumed so far by this thread, if the kernel reports it.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn cpu_time_of(iters: u64, f: fn() -> [u8; 32]) -> Duration {
    let wall = Instant::now();
    let start = thread_cpu();
    for _ in 0..iters {
        black_box(f());
    }
    match (start, thread_cpu()) {
        (Some(a), Some(b)) => b - a,
        _ => wall.elapsed(),
    }
}

fn exchanges(c: &mut Criterion) {
    let mut g = c.benchmark_group("exchange");
    g.bench_function("v1 both sides (wall)", |b| b.iter(v1_exchange));
    g.bench_function("v1 both sides (cpu)", |b| {
        b.iter_custom(|n| cpu_time_of(n, v1_exchange))
    });
    g.bench_function("v2 both sides (wall)", |b| b.iter(v2_exchange));
    g.bench_function("v2 both sides (cpu)", |b| {
        b.iter_custom(|n| cpu_time_of(n, v2_exchange))
    });
    g.finish();
}

criterion_group!(benches, exchanges);
criterion_main!(benches);
