//! Striped frames (docs/yakk2.md, "Lanes") on a peer's arbitrary bytes: whatever arrives on
//! up to four lanes, the reader ends (data, an error, or the end) without a panic or a hang,
//! and never yields more bytes than arrived. A second mode writes the input through a
//! `Striped` writer and checks that the reader gets exactly those bytes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use yakk_session::stripe::Striped;

thread_local! {
    /// One runtime for all inputs: building one per input costs more than the input's work.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
}

fn lanes(n: usize, cap: usize) -> (Vec<DuplexStream>, Vec<DuplexStream>) {
    (0..n).map(|_| duplex(cap)).unzip()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(first & 3) + 1;
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let cap = rest.len() * 2 + 1024;
            if first & 0x80 == 0 {
                // Hostile: the input, cut into (lane, length, bytes) pieces, is what the lanes carry.
                let (mut raw, far) = lanes(n, cap);
                let mut p = rest;
                let mut arrived = 0usize;
                while let [lane, len, tail @ ..] = p {
                    let take = usize::from(*len).min(tail.len());
                    raw[usize::from(*lane) % n]
                        .write_all(&tail[..take])
                        .await
                        .unwrap();
                    arrived += take;
                    p = &tail[take..];
                }
                for mut l in raw {
                    l.shutdown().await.unwrap();
                }
                let mut r = Striped::new(far);
                let mut got = Vec::new();
                if r.read_to_end(&mut got).await.is_ok() {
                    assert!(got.len() <= arrived, "{} bytes out of {arrived}", got.len());
                }
            } else {
                // Honest: what a writer stripes comes back whole and in order.
                // Room for every byte with a 12-byte header each, so the writer never waits.
                let (near, far) = lanes(n, rest.len() * 13 + 1024);
                let mut w = Striped::new(near);
                for piece in rest.chunks(usize::from(first & 0x7c) * 37 + 1) {
                    w.write_all(piece).await.unwrap();
                }
                w.shutdown().await.unwrap();
                let mut r = Striped::new(far);
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                assert!(got == rest, "the striped bytes came back different");
            }
        })
    });
});
