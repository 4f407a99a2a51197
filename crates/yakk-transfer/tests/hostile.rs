//! A hostile sender that speaks the yakk/2 framing by hand (independently of the crate's own
//! encoder, following docs/yakk2-transfer.md) tries to escape the target folder, lie about
//! sizes, send damaged data and make the receiver allocate without bound.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use yakk_transfer::{NullReporter, ReceiveOptions, ReceiveSummary, TransferError, receive};

fn frame(t: u8, p: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(p.len() as u32).to_be_bytes());
    v.extend_from_slice(p);
    v
}

enum E<'a> {
    Dir(&'a str),
    File(&'a str, u64, [u8; 32]),
    Stream(&'a str),
    Raw(u8, &'a str),
}

fn offer(entries: &[E]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        let (kind, name) = match e {
            E::Dir(n) => (0, n),
            E::File(n, ..) => (1, n),
            E::Stream(n) => (2, n),
            E::Raw(k, n) => (*k, n),
        };
        p.push(kind);
        p.extend_from_slice(&(name.len() as u16).to_be_bytes());
        p.extend_from_slice(name.as_bytes());
        if let E::File(_, size, hash) = e {
            p.extend_from_slice(&size.to_be_bytes());
            p.push(1);
            p.extend_from_slice(hash);
        }
    }
    frame(2, &p)
}

async fn read_frame(s: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    s.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p).await.ok()?;
    Some((h[0], p))
}

/// Run the receiver into `dst` against a sender that sends `offer_bytes`, then (if accepted)
/// `rest`. Returns the receiver's result and the frame types it sent after its hello.
async fn hostile(
    dst: &Path,
    offer_bytes: Vec<u8>,
    rest: Vec<u8>,
) -> (Result<ReceiveSummary, TransferError>, Vec<u8>) {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let peer = async move {
        let (t, hello) = read_frame(&mut a).await.unwrap();
        assert_eq!((t, &hello[..]), (1, &b"yakk-transfer\x00\x01"[..]));
        a.write_all(&offer_bytes).await.unwrap();
        let mut seen = Vec::new();
        if let Some((t, _)) = read_frame(&mut a).await {
            seen.push(t);
            if t == 3 {
                let _ = a.write_all(&rest).await;
                while let Some((t, _)) = read_frame(&mut a).await {
                    seen.push(t);
                }
            }
        }
        seen
    };
    let (r, seen) = bounded(20, async {
        tokio::join!(
            receive(b, ReceiveOptions::into_dir(dst), &NullReporter),
            peer
        )
    })
    .await;
    (r, seen)
}

const H0: [u8; 32] = [0; 32];

#[tokio::test]
async fn path_attacks_never_escape() {
    let outer = tempfile::tempdir().unwrap();
    let dst = outer.path().join("target");
    fs::create_dir(&dst).unwrap();
    for name in [
        "../evil",
        "../../evil",
        "/tmp/evil",
        "/evil",
        "C:\\evil",
        "C:evil",
        "c:/evil",
        "a/../../evil",
        "a\\..\\..\\evil",
        "..\\evil",
        "./evil",
        "a//evil",
        "evil/",
        "",
        ".",
        "..",
        "evil\u{1b}]0;owned\u{7}",
        "evil\u{1b}[2J",
        "evil\r\nfake prompt",
        "evil\u{0}.txt",
        "evil\u{9b}31m",
        "\\\\server\\share\\evil",
    ] {
        for kind in 0..2 {
            let e = if kind == 0 {
                E::Dir(name)
            } else {
                E::File(name, 1, H0)
            };
            let (r, seen) = hostile(&dst, offer(&[e]), frame(5, b"x")).await;
            let err = r.expect_err(name);
            assert!(
                matches!(err, TransferError::UnsafeName { .. }),
                "{name:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                !msg.chars().any(|c| c.is_control()),
                "raw control in {msg:?}"
            );
            assert_eq!(seen, vec![8], "{name:?}: the receiver must answer ERROR");
        }
    }
    // Nothing was created anywhere.
    assert_eq!(tree(outer.path()).len(), 1, "{:?}", tree(outer.path()));
}

#[cfg(unix)]
#[tokio::test]
async fn symlink_attacks_never_escape() {
    let outer = tempfile::tempdir().unwrap();
    let dst = outer.path().join("target");
    let elsewhere = outer.path().join("elsewhere");
    fs::create_dir_all(&dst).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dst.join("link")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("f"), dst.join("flink")).unwrap();
    let h = *blake3::hash(b"x").as_bytes();
    for entries in [
        vec![E::File("link/x", 1, h)],
        vec![E::Dir("link"), E::File("link/x", 1, h)],
        vec![E::Dir("link/sub")],
        vec![E::File("flink", 1, h)],
        // a link kind does not exist in the protocol
        vec![E::Raw(3, "newlink")],
    ] {
        let (r, seen) = hostile(
            &dst,
            offer(&entries),
            [frame(5, b"x"), frame(6, b""), frame(7, b"")].concat(),
        )
        .await;
        let err = r.unwrap_err();
        assert!(
            matches!(err, TransferError::Symlink(_) | TransferError::Protocol(_)),
            "{err:?}"
        );
        assert!(seen == vec![4] || seen == vec![8], "{seen:?}");
    }
    assert!(tree(&elsewhere).is_empty());
}

#[tokio::test]
async fn conflicting_entries_are_refused() {
    let t = tempfile::tempdir().unwrap();
    for entries in [
        vec![E::File("a", 0, H0), E::File("a", 0, H0)],
        vec![E::File("a", 0, H0), E::File("a/b", 0, H0)],
        vec![E::Dir("a"), E::File("a", 0, H0)],
        vec![E::File("a", 0, H0), E::Dir("a/b")],
        vec![E::Stream("s"), E::File("b", 0, H0)],
        vec![E::File(".yakk-0123.part", 0, H0)],
    ] {
        let (r, seen) = hostile(t.path(), offer(&entries), vec![]).await;
        assert!(r.is_err());
        assert!(seen == vec![8] || seen == vec![4], "{seen:?}");
    }
    assert!(tree(t.path()).is_empty());
}

#[tokio::test]
async fn huge_offers_are_refused_without_allocating() {
    let t = tempfile::tempdir().unwrap();
    // A frame header announcing 4 GiB: refused from the header alone.
    let (r, _) = hostile(t.path(), vec![2, 0xff, 0xff, 0xff, 0xff], vec![]).await;
    assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    // 64 MiB + 1: just over the bound.
    let (r, _) = hostile(
        t.path(),
        [&[2u8][..], &((64u32 << 20) + 1).to_be_bytes()].concat(),
        vec![],
    )
    .await;
    assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    // A count of entries beyond the limit, and a count the payload cannot hold.
    for count in [1_000_001u32, 999_999, u32::MAX] {
        let mut p = vec![0, 1];
        p.extend_from_slice(&count.to_be_bytes());
        p.extend_from_slice(&[1, 0, 1, b'a']);
        let (r, seen) = hostile(t.path(), frame(2, &p), vec![]).await;
        assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
        assert_eq!(seen, vec![8]);
    }
    // A name longer than the bound.
    let long = "a".repeat(5000);
    let (r, _) = hostile(t.path(), offer(&[E::File(&long, 0, H0)]), vec![]).await;
    assert!(r.is_err());
    // Not a yakk sender at all.
    let (r, _) = hostile(t.path(), b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![]).await;
    assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    assert!(tree(t.path()).is_empty());
}

#[tokio::test]
async fn declared_sizes_are_enforced() {
    let data = b"0123456789";
    let h = *blake3::hash(data).as_bytes();
    // More than declared, in one frame or over two.
    for rest in [
        frame(5, b"0123456789abc"),
        [frame(5, b"01234567"), frame(5, b"89a")].concat(),
    ] {
        let t = tempfile::tempdir().unwrap();
        let (r, seen) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
        assert!(
            matches!(r, Err(TransferError::SizeMismatch { what: "more", .. })),
            "{r:?}"
        );
        assert_eq!(seen, vec![3, 8]);
        assert!(!t.path().join("f").exists());
    }
    // Less than declared: an early file end, or an early done.
    for rest in [
        [frame(5, b"01234"), frame(6, b""), frame(7, b"")].concat(),
        [frame(5, b"01234"), frame(7, b"")].concat(),
    ] {
        let t = tempfile::tempdir().unwrap();
        let (r, seen) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
        assert!(
            matches!(r, Err(TransferError::SizeMismatch { what: "less", .. })),
            "{r:?}"
        );
        assert_eq!(seen, vec![3, 8]);
        assert!(!t.path().join("f").exists());
    }
    // Data after the last file.
    let t = tempfile::tempdir().unwrap();
    let rest = [
        frame(5, data),
        frame(6, b""),
        frame(5, b"more"),
        frame(7, b""),
    ]
    .concat();
    let (r, _) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
    assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    // A stream whose trailer lies about its size.
    let t = tempfile::tempdir().unwrap();
    let mut trailer = 11u64.to_be_bytes().to_vec();
    trailer.push(1);
    trailer.extend_from_slice(&h);
    let rest = [frame(5, data), frame(6, &trailer), frame(7, b"")].concat();
    let (r, _) = hostile(t.path(), offer(&[E::Stream("s")]), rest).await;
    assert!(
        matches!(r, Err(TransferError::SizeMismatch { .. })),
        "{r:?}"
    );
    assert!(tree(t.path()).is_empty(), "stream partial must go");
}

#[tokio::test]
async fn damaged_data_never_reaches_the_final_name() {
    let t = tempfile::tempdir().unwrap();
    let h = *blake3::hash(b"0123456789").as_bytes();
    let rest = [frame(5, b"012345678X"), frame(6, b""), frame(7, b"")].concat();
    let (r, seen) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
    assert!(matches!(r, Err(TransferError::HashMismatch(_))), "{r:?}");
    assert_eq!(seen, vec![3, 8]);
    assert!(tree(t.path()).is_empty(), "{:?}", tree(t.path()));

    // The good data goes through the same path.
    let rest = [frame(5, b"0123456789"), frame(6, b""), frame(7, b"")].concat();
    let (r, seen) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
    r.unwrap();
    assert_eq!(seen, vec![3, 9]);
    assert_eq!(fs::read(t.path().join("f")).unwrap(), b"0123456789");
}

#[tokio::test]
async fn a_peer_error_is_escaped() {
    let t = tempfile::tempdir().unwrap();
    let h = *blake3::hash(b"0123456789").as_bytes();
    let rest = frame(8, b"bad \x1b[31mthing\x07");
    let (r, _) = hostile(t.path(), offer(&[E::File("f", 10, h)]), rest).await;
    let e = r.unwrap_err();
    assert!(matches!(e, TransferError::PeerError(_)));
    assert!(!e.to_string().chars().any(|c| c.is_control()), "{e}");
}

/// A hostile receiver: offsets beyond the file, or an accept that does not match the offer.
#[tokio::test]
async fn sender_checks_the_accept() {
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("f");
    fs::write(&p, b"0123456789").unwrap();
    let m = yakk_transfer::Manifest::scan(&[&p]).unwrap();
    for accept in [
        [&1u32.to_be_bytes()[..], &11u64.to_be_bytes()].concat(),
        [
            &2u32.to_be_bytes()[..],
            &0u64.to_be_bytes(),
            &0u64.to_be_bytes(),
        ]
        .concat(),
    ] {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let peer = async move {
            b.write_all(&frame(1, b"yakk-transfer\x00\x01"))
                .await
                .unwrap();
            read_frame(&mut b).await.unwrap();
            b.write_all(&frame(3, &accept)).await.unwrap();
            read_frame(&mut b).await
        };
        let (r, _) = bounded(10, async {
            tokio::join!(yakk_transfer::send(a, &m, &NullReporter), peer)
        })
        .await;
        assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    }
    // Another version of the protocol.
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let peer = async move {
        b.write_all(&frame(1, b"yakk-transfer\x00\x02"))
            .await
            .unwrap();
        read_frame(&mut b).await
    };
    let (r, reply) = bounded(10, async {
        tokio::join!(yakk_transfer::send(a, &m, &NullReporter), peer)
    })
    .await;
    assert!(
        matches!(r, Err(TransferError::UnsupportedVersion(2))),
        "{r:?}"
    );
    assert_eq!(reply.unwrap().0, 8);
}

/// The first frame the receiver answers `offer_bytes` with (after its hello), and its result.
async fn first_answer(
    offer_bytes: Vec<u8>,
    opts: ReceiveOptions,
) -> (Result<ReceiveSummary, TransferError>, Option<(u8, Vec<u8>)>) {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let peer = async move {
        read_frame(&mut a).await.unwrap();
        a.write_all(&offer_bytes).await.unwrap();
        read_frame(&mut a).await
    };
    bounded(20, async {
        tokio::join!(receive(b, opts, &NullReporter), peer)
    })
    .await
}

/// A sender probes the receiver's folder by offering names that exist there in every state
/// (a different file, an identical file, a folder, a link, a file where a folder should be) and
/// reading the refusal. Every refusal is the same word, the same as when the person just says
/// no, and an identical file is not reported as "already there" unless the receiver opted in.
#[tokio::test]
async fn refusals_say_nothing_of_the_receivers_files() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("f"), b"mine").unwrap();
    let mine = *blake3::hash(b"mine").as_bytes();
    let other = *blake3::hash(b"other").as_bytes();
    fs::write(dst.join("notes.txt"), b"mine").unwrap();
    fs::write(dst.join("same.txt"), b"mine").unwrap();
    fs::create_dir(dst.join("folder")).unwrap();
    fs::write(dst.join("afile"), b"x").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(elsewhere.path().join("f"), dst.join("link")).unwrap();
    let before = tree(dst);

    let mut probes = vec![
        ("a different file", vec![E::File("notes.txt", 5, other)]),
        ("an identical file", vec![E::File("same.txt", 4, mine)]),
        ("a folder", vec![E::File("folder", 4, mine)]),
        ("a file as a folder", vec![E::File("afile/x", 4, mine)]),
        ("a file as a folder entry", vec![E::Dir("afile")]),
    ];
    if cfg!(unix) {
        probes.push(("a link", vec![E::File("link", 4, mine)]));
        probes.push(("through a link", vec![E::File("link/x", 4, mine)]));
    }
    let mut answers = Vec::new();
    for (what, entries) in probes {
        let (r, answer) = first_answer(offer(&entries), ReceiveOptions::into_dir(dst)).await;
        assert!(r.is_err(), "{what}: {r:?}");
        answers.push((what, answer.expect("an answer")));
    }
    // The person says no to a name that does not exist.
    let mut opts = ReceiveOptions::into_dir(dst);
    opts.confirm = Some(Box::new(|_| false));
    let (r, answer) = first_answer(offer(&[E::File("fresh.txt", 4, mine)]), opts).await;
    assert!(matches!(r, Err(TransferError::Declined)), "{r:?}");
    answers.push(("the person said no", answer.expect("an answer")));

    for (what, (t, text)) in &answers {
        assert_eq!(
            (*t, String::from_utf8_lossy(text).as_ref()),
            (4, "declined"),
            "{what}: the sender must read a bare refusal"
        );
    }
    assert_eq!(tree(dst), before, "nothing written");

    // Opting in to skipping identical files tells the sender, by the offset, and nothing else.
    let mut opts = ReceiveOptions::into_dir(dst);
    opts.skip_identical = true;
    let (r, answer) = first_answer(offer(&[E::File("same.txt", 4, mine)]), opts).await;
    let (t, accept) = answer.unwrap();
    assert_eq!(t, 3, "accepted");
    assert_eq!(
        accept,
        [&1u32.to_be_bytes()[..], &4u64.to_be_bytes()].concat()
    );
    drop(r);
}
