//! Vectors for the browser peer's TypeScript (`web/test/unit`): frames, offers, accepts,
//! stream trailers, texts, names, the escaping and BLAKE3 hashes, all made or judged by this
//! crate's `wire` and `names` modules (docs/yakk2-transfer.md).
//!
//! The test rebuilds every vector with the real code and compares it with the committed
//! `tests/vectors/web-transfer.json`, so the file cannot drift from the Rust code. After an
//! intended change, regenerate it with
//! `YAKK_WRITE_VECTORS=1 cargo test -p yakk-transfer --test web_vectors`.

use serde_json::{Value, json};
use yakk_transfer::names;
use yakk_transfer::wire::{self, Frame, Offer, WireEntry, WireKind};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/web-transfer.json"
);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic content: byte i is i mod 251.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

fn file(name: &str, size: u64, content_hash: [u8; 32]) -> WireEntry {
    WireEntry {
        name: name.into(),
        kind: WireKind::File {
            size,
            hash: content_hash,
        },
    }
}

fn dir(name: &str) -> WireEntry {
    WireEntry {
        name: name.into(),
        kind: WireKind::Dir,
    }
}

fn stream(name: &str) -> WireEntry {
    WireEntry {
        name: name.into(),
        kind: WireKind::Stream,
    }
}

fn entry_json(e: &WireEntry) -> Value {
    match &e.kind {
        WireKind::Dir => json!({ "kind": "dir", "name": e.name }),
        WireKind::File { size, hash } => {
            json!({ "kind": "file", "name": e.name, "size": size, "hash_hex": hex(hash) })
        }
        WireKind::Stream => json!({ "kind": "stream", "name": e.name }),
    }
}

async fn framed(t: Frame, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::write_frame(&mut v, t, payload).await.unwrap();
    v
}

fn offers() -> Vec<Offer> {
    vec![
        // The example of docs/yakk2-transfer.md §7.
        Offer {
            entries: vec![dir("d"), file("d/é", 5, hash(b"hello"))],
        },
        Offer {
            entries: vec![
                dir("photos"),
                dir("photos/2024"),
                file("photos/2024/a.jpg", 1 << 20, hash(&pattern(1 << 20))),
                file("photos/empty", 0, hash(b"")),
                file("фото/写真/صورة.jpg", 3, hash(b"abc")),
                file(".hidden", 1, hash(b"x")),
                dir("empty folder"),
                file("big", 9_007_199_254_740_991, [0xab; 32]),
            ],
        },
        Offer {
            entries: vec![stream("stdin")],
        },
    ]
}

/// Offer payloads the decoder refuses, with the error it gives.
fn refused_offers() -> Vec<(&'static str, Vec<u8>)> {
    let enc = |entries: Vec<WireEntry>| wire::encode_offer(&Offer { entries });
    let h = [7u8; 32];
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("climbs out", enc(vec![file("../x", 1, h)])),
        ("absolute", enc(vec![file("/etc/passwd", 1, h)])),
        ("empty component", enc(vec![file("a//b", 1, h)])),
        ("trailing slash", enc(vec![dir("a/")])),
        ("dot component", enc(vec![file("a/./b", 1, h)])),
        ("backslash", enc(vec![file("a\\b", 1, h)])),
        ("drive letter", enc(vec![file("C:x", 1, h)])),
        ("escape sequence", enc(vec![file("x\u{1b}[31m", 1, h)])),
        ("C1 control", enc(vec![file("c1\u{9b}", 1, h)])),
        ("NUL", enc(vec![file("nul\0", 1, h)])),
        ("empty name", enc(vec![file("", 1, h)])),
        (
            "component too long",
            enc(vec![file(&"a".repeat(256), 1, h)]),
        ),
        ("too deep", enc(vec![dir(&vec!["a"; 129].join("/"))])),
        ("duplicate", enc(vec![file("a", 1, h), file("a", 1, h)])),
        (
            "under a file",
            enc(vec![file("a", 1, h), file("a/b", 1, h)]),
        ),
        (
            "under a later file",
            enc(vec![file("a/b", 1, h), file("a", 1, h)]),
        ),
        ("stream not alone", enc(vec![stream("s"), file("b", 1, h)])),
        (
            "sizes overflow",
            enc(vec![file("a", u64::MAX, h), file("b", 1, h)]),
        ),
        ("no entries", enc(vec![])),
    ];
    let one = enc(vec![file("a", 1, h)]);
    let mut p = one.clone();
    p[2..6].copy_from_slice(&wire::MAX_ENTRIES.to_be_bytes());
    cases.push(("count beyond the payload", p));
    let mut p = one.clone();
    p[2..6].copy_from_slice(&(wire::MAX_ENTRIES + 1).to_be_bytes());
    cases.push(("count beyond the limit", p));
    cases.push(("truncated", one[..one.len() - 1].to_vec()));
    let mut p = one.clone();
    p.push(0);
    cases.push(("trailing byte", p));
    let mut p = one.clone();
    p[1] = 2;
    cases.push(("version 2", p));
    let mut p = one.clone();
    p[6] = 3;
    cases.push(("unknown kind", p));
    let mut p = one.clone();
    p[6 + 3 + 1 + 8] = 2;
    cases.push(("unknown hash algorithm", p));
    let mut p = one.clone();
    p[9] = 0xff;
    cases.push(("name not UTF-8", p));
    let mut p = one;
    p[7..9].copy_from_slice(&4097u16.to_be_bytes());
    cases.push(("name length beyond 4096", p));
    cases
}

fn names_vectors() -> Value {
    let valid = [
        "a/b/c.txt",
        "фото/写真/صورة.jpg",
        ".hidden",
        "...",
        "a b",
        "é",
        ".yakk-0123.part",
    ];
    for n in valid {
        names::validate(n).unwrap();
    }
    let long_component = "a".repeat(256);
    let long_name = "a/".repeat(2100);
    let deep = vec!["a"; 200].join("/");
    let invalid: Vec<Value> = [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "a/../../x",
        "a/./b",
        "a//b",
        "a/",
        "C:\\x",
        "C:x",
        "..\\..\\x",
        "a\\b",
        "x\u{1b}[31m",
        "x\ny",
        "nul\0",
        "del\u{7f}",
        "c1\u{9b}",
        long_component.as_str(),
        long_name.as_str(),
        deep.as_str(),
    ]
    .iter()
    .map(|n| {
        let err = names::validate(n).expect_err(n);
        json!({ "name": n, "error": err.to_string() })
    })
    .collect();
    json!({ "valid": valid, "invalid": invalid })
}

fn escapes() -> Vec<Value> {
    [
        "ok.txt",
        "a\u{1b}[2Jb",
        "evil\u{202e}gpj.exe",
        "a\\b",
        "x\ny\u{9b}",
        "日本",
        "\u{61c}\u{200b}\u{2028}\u{2060}\u{2069}\u{feff}\u{fff9}\u{fffb}\u{fffc}",
        "\u{1f600} tab\there",
    ]
    .iter()
    .map(|s| json!({ "input": s, "output": names::escape(s) }))
    .collect()
}

async fn build() -> Value {
    let mut frames = Vec::new();
    // Large frames (pattern content) are given by their length, header and BLAKE3.
    let mut push = |name: &str, t: Frame, payload: Vec<u8>, bytes: Vec<u8>| {
        if payload.len() > 4096 {
            assert_eq!(payload, pattern(payload.len()));
            frames.push(json!({
                "name": name,
                "type": t as u8,
                "pattern_len": payload.len(),
                "frame_head_hex": hex(&bytes[..5]),
                "frame_blake3_hex": hex(&hash(&bytes)),
            }));
        } else {
            frames.push(json!({
                "name": name,
                "type": t as u8,
                "payload_hex": hex(&payload),
                "frame_hex": hex(&bytes),
            }));
        }
    };
    let hello = wire::encode_hello();
    push(
        "hello",
        Frame::Hello,
        hello.clone(),
        framed(Frame::Hello, &hello).await,
    );
    for (i, offer) in offers().iter().enumerate() {
        let p = wire::encode_offer(offer);
        assert_eq!(&wire::decode_offer(&p).unwrap(), offer);
        let f = framed(Frame::Offer, &p).await;
        push(&format!("offer {i}"), Frame::Offer, p, f);
    }
    let accept = wire::encode_accept(&[0, 0]);
    let f = framed(Frame::Accept, &accept).await;
    push("accept", Frame::Accept, accept, f);
    let refuse = wire::encode_text(wire::DECLINED);
    let f = framed(Frame::Refuse, &refuse).await;
    push("refuse", Frame::Refuse, refuse, f);
    for (name, data) in [
        ("data hello", b"hello".to_vec()),
        ("data 1 MiB", pattern(1 << 20)),
    ] {
        let f = framed(Frame::Data, &data).await;
        push(name, Frame::Data, data, f);
    }
    push(
        "file end",
        Frame::FileEnd,
        vec![],
        framed(Frame::FileEnd, &[]).await,
    );
    let trailer = wire::encode_stream_end(11, &hash(b"hello world"));
    let f = framed(Frame::FileEnd, &trailer).await;
    push("stream end", Frame::FileEnd, trailer, f);
    push("done", Frame::Done, vec![], framed(Frame::Done, &[]).await);
    let stopped = wire::encode_text(wire::STOPPED);
    let f = framed(Frame::Error, &stopped).await;
    push("error stopped", Frame::Error, stopped, f);
    push("ack", Frame::Ack, vec![], framed(Frame::Ack, &[]).await);

    // Headers refused before any payload is read.
    let mut refused_headers = Vec::new();
    for h in [
        [5u8, 0xff, 0xff, 0xff, 0xff],
        [5, 0, 0, 0, 0],
        [5, 0, 0x10, 0, 1],
        [2, 0x04, 0, 0, 1],
        [2, 0, 0, 0, 5],
        [1, 0, 0, 0, 14],
        [3, 0, 0x7a, 0x12, 0x05],
        [4, 0, 0, 4, 1],
        [6, 0, 0, 0, 42],
        [7, 0, 0, 0, 1],
        [9, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
        [42, 0, 0, 0, 0],
    ] {
        let mut r: &[u8] = &h;
        let err = wire::read_header(&mut r).await.expect_err("refused");
        refused_headers.push(json!({ "header_hex": hex(&h), "error": err.to_string() }));
    }
    // Headers at the bounds, accepted.
    let mut accepted_headers = Vec::new();
    for h in [
        [5u8, 0, 0x10, 0, 0],
        [2, 0x04, 0, 0, 0],
        [3, 0, 0x7a, 0x12, 0x04],
        [4, 0, 0, 4, 0],
        [6, 0, 0, 0, 41],
        [8, 0, 0, 0, 0],
    ] {
        let mut r: &[u8] = &h;
        let (t, len) = wire::read_header(&mut r).await.unwrap();
        accepted_headers.push(json!({ "header_hex": hex(&h), "type": t as u8, "length": len }));
    }

    let offer_list: Vec<Value> = offers()
        .iter()
        .map(|o| {
            json!({
                "entries": o.entries.iter().map(entry_json).collect::<Vec<_>>(),
                "payload_hex": hex(&wire::encode_offer(o)),
            })
        })
        .collect();
    let refused_offer_list: Vec<Value> = refused_offers()
        .into_iter()
        .map(|(case, p)| {
            let err = wire::decode_offer(&p).expect_err(case);
            json!({ "case": case, "payload_hex": hex(&p), "error": err.to_string() })
        })
        .collect();

    // Accepts against offer 1 (8 entries).
    let o1 = &offers()[1];
    let mut accepts = Vec::new();
    for offsets in [
        vec![0u64; 8],
        vec![0, 0, 1 << 20, 0, 2, 1, 0, 9_007_199_254_740_991],
    ] {
        let p = wire::encode_accept(&offsets);
        assert_eq!(wire::decode_accept(&p, o1).unwrap(), offsets);
        accepts.push(json!({ "offer": 1, "offsets": offsets, "payload_hex": hex(&p) }));
    }
    let mut refused_accepts = Vec::new();
    for (case, p) in [
        ("count differs", wire::encode_accept(&[0; 7])),
        (
            "offset beyond a file",
            wire::encode_accept(&[0, 0, (1 << 20) + 1, 0, 0, 0, 0, 0]),
        ),
        (
            "offset for a folder",
            wire::encode_accept(&[1, 0, 0, 0, 0, 0, 0, 0]),
        ),
        ("truncated", wire::encode_accept(&[0; 8])[..67].to_vec()),
        ("too short for a count", vec![0, 0]),
    ] {
        let err = wire::decode_accept(&p, o1).expect_err(case);
        refused_accepts.push(
            json!({ "case": case, "offer": 1, "payload_hex": hex(&p), "error": err.to_string() }),
        );
    }

    let mut stream_ends = Vec::new();
    for (size, data) in [(0u64, b"".as_slice()), (11, b"hello world".as_slice())] {
        let p = wire::encode_stream_end(size, &hash(data));
        assert_eq!(wire::decode_stream_end(&p).unwrap(), (size, hash(data)));
        stream_ends
            .push(json!({ "size": size, "hash_hex": hex(&hash(data)), "payload_hex": hex(&p) }));
    }
    let good_end = wire::encode_stream_end(1, &[1; 32]);
    let mut bad_alg = good_end.clone();
    bad_alg[8] = 2;
    let mut refused_stream_ends = Vec::new();
    for p in [bad_alg, good_end[..40].to_vec(), vec![]] {
        let err = wire::decode_stream_end(&p).expect_err("refused");
        refused_stream_ends.push(json!({ "payload_hex": hex(&p), "error": err.to_string() }));
    }

    let long = "é".repeat(600);
    let texts: Vec<Value> = [
        wire::DECLINED,
        wire::STOPPED,
        "",
        long.as_str(),
        &format!("a{}", "日".repeat(400)),
    ]
    .iter()
    .map(|s| json!({ "input": s, "payload_hex": hex(&wire::encode_text(s)) }))
    .collect();
    let peer_errors: Vec<Value> = [
        b"stopped".to_vec(),
        b"stopped ".to_vec(),
        b"disk \x1b[2J full".to_vec(),
        vec![0xff, 0xfe, b'a'],
    ]
    .iter()
    .map(|p| {
        json!({
            "payload_hex": hex(p),
            "decoded": wire::decode_text(p),
            "error": wire::peer_error(p).to_string(),
        })
    })
    .collect();

    let blake3: Vec<Value> = [
        0usize,
        1,
        63,
        64,
        65,
        1023,
        1024,
        1025,
        65_536,
        (1 << 20) + 7,
    ]
    .iter()
    .map(|&len| json!({ "len": len, "hash_hex": hex(&hash(&pattern(len))) }))
    .collect();

    json!({
        "description": "yakk/2 transfer protocol vectors (docs/yakk2-transfer.md) made and judged by crates/yakk-transfer's wire and names modules. Data content is pattern(len): byte i is i mod 251. Checked by crates/yakk-transfer/tests/web_vectors.rs; regenerate with YAKK_WRITE_VECTORS=1 cargo test -p yakk-transfer --test web_vectors.",
        "frames": frames,
        "refused_headers": refused_headers,
        "accepted_headers": accepted_headers,
        "offers": offer_list,
        "refused_offers": refused_offer_list,
        "accepts": accepts,
        "refused_accepts": refused_accepts,
        "stream_ends": stream_ends,
        "refused_stream_ends": refused_stream_ends,
        "texts": texts,
        "peer_errors": peer_errors,
        "names": names_vectors(),
        "escapes": escapes(),
        "blake3": blake3,
    })
}

#[tokio::test]
async fn web_transfer_vectors_match_the_rust_code() {
    let built = build().await;
    if std::env::var_os("YAKK_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&built).unwrap() + "\n";
        std::fs::write(VECTORS, text).unwrap();
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(VECTORS)
            .expect("tests/vectors/web-transfer.json exists (YAKK_WRITE_VECTORS=1 writes it)"),
    )
    .unwrap();
    assert_eq!(
        committed, built,
        "web-transfer.json differs from what the Rust code makes now"
    );
}
