//! Stream flow control (docs/yakk2.md, "Stream flow control") driven by arbitrary events: an
//! honest sender and a receiver joined by a simulated channel, with grants travelling as the
//! text the peer would send, plus hostile grant texts and message sizes. No panic or
//! overflow; an honest sender never overruns what the receiver granted; a grant survives
//! `grant_text` → `parse_grant`; the sender's credit never shrinks.
#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use yakk_transport::flow_control::{Admit, Flow, MIN_COST, Pool, cost, grant_text, parse_grant};

fuzz_target!(|data: &[u8]| {
    let pool = Arc::new(Pool::default());
    let receiver = Flow::new(pool.clone());
    let sender = Flow::new(Arc::new(Pool::default()));
    // Sent, not yet arrived; arrived, not yet read.
    let mut wire: VecDeque<usize> = VecDeque::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut p = data;
    while let [op, a, b, rest @ ..] = p {
        p = rest;
        let arg = usize::from(u16::from_be_bytes([*a, *b]));
        match op % 7 {
            // The sender wants to send `arg` + 1 bytes (at most 64 KiB, as yakk/2 messages).
            0 => {
                let want = (arg + 1).min(65536);
                let n = sender.room(want);
                assert!(n <= want);
                if n > 0 {
                    sender.on_sent(n);
                    wire.push_back(n);
                }
            }
            // One message arrives: within what was granted, always.
            1 => {
                if let Some(n) = wire.pop_front() {
                    match receiver.admit(n) {
                        Admit::Ok => queue.push_back(n),
                        Admit::Overrun { received, granted } => {
                            panic!("honest sender overran: {received} > {granted}")
                        }
                    }
                }
            }
            // The application reads one message.
            2 => {
                if let Some(n) = queue.pop_front() {
                    receiver.consumed(n);
                }
            }
            // The receiver's writer pump sends a grant, if one is due; it arrives as text.
            3 => {
                if let Some(limit) = receiver.next_grant() {
                    let text = grant_text(limit);
                    assert_eq!(parse_grant(text.as_bytes()), Some(limit));
                    sender.on_grant(limit);
                }
            }
            // A hostile grant text of `arg % 24` bytes taken from the input: never a panic,
            // and what parses is a decimal the sender may take (limits only grow).
            4 => {
                let k = (arg % 24).min(p.len());
                let (text, tail) = p.split_at(k);
                p = tail;
                if let Some(v) = parse_grant(text) {
                    assert!(text.starts_with(b"w "));
                    // Applied to a separate flow: an honest sender's peer would not send it.
                    let other = Flow::new(Arc::new(Pool::default()));
                    let before = other.room(usize::MAX >> 1);
                    other.on_grant(v);
                    assert!(other.room(usize::MAX >> 1) >= before);
                }
            }
            // A striped part's window: grow to `arg` KiB whatever the reader does.
            5 => receiver.set_eager((arg as u64) << 10),
            // A hostile message size at a receiver of its own: cost is at least MIN_COST,
            // and admitting it cannot panic.
            _ => {
                assert!(cost(arg) >= MIN_COST && cost(arg) >= arg as u64);
                let other = Flow::new(pool.clone());
                let _ = other.admit(arg);
            }
        }
    }
});
