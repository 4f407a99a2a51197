//! yakk/1 file exchange (`--legacy`): our server and fetcher against each other, and each
//! against hand-written HTTP peers checked byte by byte against PROTOCOL.md §2.

mod common;

use std::fs;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yakk_transfer::{
    Destination, Manifest, NullReporter, ReceiveOptions, TransferError, V1Served, fetch_http_v1,
    serve_http_v1,
};

/// The bytes a served GET sent.
fn sent(s: Result<V1Served, TransferError>) -> u64 {
    match s.unwrap() {
        V1Served::File(summary) => summary.bytes_sent,
        V1Served::Part(summary) => panic!("the whole file was asked for: {summary:?}"),
        V1Served::Head => panic!("a GET was answered as a HEAD"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_and_fetcher_over_tcp_and_duplex() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        for (i, name) in [
            "plain.bin",
            "report 2024; \"final\".pdf",
            "日本語 ファイル.txt",
        ]
        .into_iter()
        .enumerate()
        {
            let p = src.path().join(name);
            let data = random_bytes(i as u8, 5 << 20 | 17);
            fs::write(&p, &data).unwrap();
            let m = Manifest::scan(&[&p]).unwrap();
            for tcp in [true, false] {
                let dst = tempfile::tempdir().unwrap();
                let opts = ReceiveOptions::into_dir(dst.path());
                let (s, r) = if tcp {
                    let (a, b) = tcp_pair().await;
                    tokio::join!(
                        serve_http_v1(a, &m, &NullReporter),
                        fetch_http_v1(b, opts, &NullReporter)
                    )
                } else {
                    let (a, b) = tokio::io::duplex(4096);
                    tokio::join!(
                        serve_http_v1(a, &m, &NullReporter),
                        fetch_http_v1(b, opts, &NullReporter)
                    )
                };
                assert_eq!(sent(s), data.len() as u64);
                let r = r.unwrap();
                assert_eq!(r.paths, vec![dst.path().join(name)]);
                assert_eq!(fs::read(dst.path().join(name)).unwrap(), data);
                assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);
            }
        }
    })
    .await
}

#[tokio::test]
async fn stdin_goes_chunked_and_comes_back() {
    bounded(30, async {
        let data = random_bytes(4, 300_000);
        let m = Manifest::from_reader("stdin", Box::new(std::io::Cursor::new(data.clone())));
        let out = SharedBuf::default();
        let opts = ReceiveOptions {
            destination: Destination::Writer(Box::new(out.clone())),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        };
        let (a, b) = tokio::io::duplex(4096);
        let (s, r) = tokio::join!(
            serve_http_v1(a, &m, &NullReporter),
            fetch_http_v1(b, opts, &NullReporter)
        );
        sent(s);
        r.unwrap();
        assert_eq!(*out.0.lock().unwrap(), data);
    })
    .await
}

/// What a Go `net/http` client sends, answered exactly as PROTOCOL.md §2 says.
#[tokio::test]
async fn raw_request_gets_the_documented_response() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("hello.txt");
        fs::write(&p, "hello world\n").unwrap();
        let m = Manifest::scan(&[&p]).unwrap();
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(
                b"GET /yakkfilesendreceive HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
            )
            .await
            .unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        assert_eq!(sent(s), 12);
        assert_eq!(
            String::from_utf8(resp).unwrap(),
            "HTTP/1.1 200 OK\r\n\
             Content-Disposition: attachment; filename=hello.txt\r\n\
             Content-Type: application/octet-stream\r\n\
             Accept-Ranges: bytes\r\n\
             Content-Length: 12\r\n\
             Connection: close\r\n\
             \r\n\
             hello world\n"
        );

        // What the original program's downloader (grab) asks first: the same head, no body.
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(
                b"HEAD /yakkfilesendreceive HTTP/1.1\r\nHost: localhost:6000\r\nUser-Agent: Go-http-client/1.1\r\n\r\n",
            )
            .await
            .unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        assert!(matches!(s, Ok(V1Served::Head)), "{s:?}");
        assert_eq!(
            String::from_utf8(resp).unwrap(),
            "HTTP/1.1 200 OK\r\n\
             Content-Disposition: attachment; filename=hello.txt\r\n\
             Content-Type: application/octet-stream\r\n\
             Accept-Ranges: bytes\r\n\
             Content-Length: 12\r\n\
             Connection: close\r\n\
             \r\n"
        );

        // A resumed download (grab sends "bytes=N-" when a partial file is there).
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(
                b"GET /yakkfilesendreceive HTTP/1.1\r\nHost: localhost\r\nRange: bytes=6-\r\n\r\n",
            )
            .await
            .unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        assert_eq!(sent(s), 6);
        assert_eq!(
            String::from_utf8(resp).unwrap(),
            "HTTP/1.1 206 Partial Content\r\n\
             Content-Disposition: attachment; filename=hello.txt\r\n\
             Content-Type: application/octet-stream\r\n\
             Accept-Ranges: bytes\r\n\
             Content-Range: bytes 6-11/12\r\n\
             Content-Length: 6\r\n\
             Connection: close\r\n\
             \r\n\
             world\n"
        );

        // A closed range that stops before the end is served, but as a part: the receiver
        // does not hold the file yet, and the session must go on serving.
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(b"GET /yakkfilesendreceive HTTP/1.1\r\nRange: bytes=2-4\r\n\r\n")
                .await
                .unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        match s {
            Ok(V1Served::Part(summary)) => assert_eq!(summary.bytes_sent, 3),
            other => panic!("bytes 2-4 of 12 served as {other:?}"),
        }
        assert!(
            String::from_utf8(resp)
                .unwrap()
                .ends_with("Content-Range: bytes 2-4/12\r\nContent-Length: 3\r\nConnection: close\r\n\r\nllo"),
        );

        // A range past the end is refused, as an error the caller can go on from.
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(b"GET /yakkfilesendreceive HTTP/1.1\r\nRange: bytes=12-\r\n\r\n")
                .await
                .unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        assert!(matches!(s, Err(TransferError::Http(_))), "{s:?}");
        assert_eq!(
            String::from_utf8(resp).unwrap(),
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */12\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );

        // Anything else is not served.
        let (a, mut b) = tcp_pair().await;
        let client = async move {
            b.write_all(b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut resp = Vec::new();
            b.read_to_end(&mut resp).await.unwrap();
            resp
        };
        let (s, resp) = tokio::join!(serve_http_v1(a, &m, &NullReporter), client);
        assert!(matches!(s, Err(TransferError::Http(_))));
        assert!(resp.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    })
    .await
}

/// Our fetcher against a hand-written server speaking as the original program does.
async fn fetch_from_raw(
    response: Vec<u8>,
    opts: ReceiveOptions,
) -> (Result<yakk_transfer::ReceiveSummary, TransferError>, String) {
    let (mut a, b) = tcp_pair().await;
    let server = async move {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = a.read(&mut buf).await.unwrap();
            assert!(n > 0);
            req.extend_from_slice(&buf[..n]);
        }
        let _ = a.write_all(&response).await;
        let _ = a.shutdown().await;
        String::from_utf8(req).unwrap()
    };
    bounded(20, async {
        tokio::join!(fetch_http_v1(b, opts, &NullReporter), server)
    })
    .await
}

#[tokio::test]
async fn raw_responses_are_fetched() {
    // Content-Length (what ServeContent gives), chunked, and until the end of the stream.
    let bodies: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=data.bin\r\nContent-Length: 11\r\nContent-Type: application/octet-stream\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nhello world",
        b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=data.bin\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-disposition: attachment; filename=\"data.bin\"\r\nConnection: close\r\n\r\nhello world",
    ];
    for body in bodies {
        let dst = tempfile::tempdir().unwrap();
        let (r, req) = fetch_from_raw(body.to_vec(), ReceiveOptions::into_dir(dst.path())).await;
        r.unwrap();
        assert!(
            req.starts_with("GET /yakkfilesendreceive HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nHost: "), "{req}");
        assert_eq!(
            fs::read(dst.path().join("data.bin")).unwrap(),
            b"hello world"
        );
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);
    }
}

#[tokio::test]
async fn hostile_v1_senders() {
    let cases: [(&[u8], &str); 8] = [
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"sub/evil\"\r\nContent-Length: 1\r\n\r\nx", "unsafe"),
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=../../evil\r\nContent-Length: 1\r\n\r\nx", "unsafe"),
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=/etc/evil\r\nContent-Length: 1\r\n\r\nx", "unsafe"),
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"ev\x1b[2Jil\"\r\nContent-Length: 1\r\n\r\nx", "http"),
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=short\r\nContent-Length: 100\r\n\r\nonly ten b", "closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", "http"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "http"),
        (b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=c\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "http"),
    ];
    for (resp, want) in cases {
        let outer = tempfile::tempdir().unwrap();
        let dst = outer.path().join("t");
        let (r, _) = fetch_from_raw(resp.to_vec(), ReceiveOptions::into_dir(&dst)).await;
        let e = r.unwrap_err();
        let ok = match want {
            "unsafe" => matches!(e, TransferError::UnsafeName { .. }),
            "closed" => matches!(e, TransferError::PeerClosed),
            _ => matches!(e, TransferError::Http(_)),
        };
        assert!(ok, "{want}: {e:?}");
        assert!(!e.to_string().chars().any(|c| c.is_control()));
        // Nothing written (a partial of a failed yakk/1 fetch cannot be resumed: it goes).
        let left: Vec<_> = tree(outer.path())
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // A huge head is cut off.
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 << 10));
    let dst = tempfile::tempdir().unwrap();
    let (r, _) = fetch_from_raw(huge, ReceiveOptions::into_dir(dst.path())).await;
    assert!(matches!(r, Err(TransferError::Http(_))), "{r:?}");
}

#[tokio::test]
async fn v1_carries_one_file_only() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), "a").unwrap();
    fs::write(src.path().join("b"), "b").unwrap();
    for m in [
        Manifest::scan(&[src.path()]).unwrap(),
        Manifest::scan(&[src.path().join("a"), src.path().join("b")]).unwrap(),
    ] {
        let (a, _b) = tokio::io::duplex(1024);
        let e = serve_http_v1(a, &m, &NullReporter).await.unwrap_err();
        assert!(matches!(e, TransferError::V1SingleFile(_)), "{e:?}");
        assert!(e.to_string().contains("single file"));
    }
}

#[tokio::test]
async fn v1_fetch_respects_existing_files_and_refusal() {
    let dst = tempfile::tempdir().unwrap();
    fs::write(dst.path().join("data.bin"), "mine").unwrap();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=data.bin\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let (r, _) = fetch_from_raw(resp.clone(), ReceiveOptions::into_dir(dst.path())).await;
    assert!(matches!(r, Err(TransferError::FileExists(_))), "{r:?}");
    assert_eq!(fs::read(dst.path().join("data.bin")).unwrap(), b"mine");

    let opts = ReceiveOptions {
        destination: Destination::Dir(dst.path().to_owned()),
        overwrite: true,
        skip_identical: false,
        confirm: Some(Box::new(|s| {
            assert_eq!(s.entries[0].name, "data.bin");
            assert_eq!(s.total_bytes, 5);
            false
        })),
    };
    let (r, _) = fetch_from_raw(resp.clone(), opts).await;
    assert!(matches!(r, Err(TransferError::Declined)), "{r:?}");
    assert_eq!(fs::read(dst.path().join("data.bin")).unwrap(), b"mine");

    let mut opts = ReceiveOptions::into_dir(dst.path());
    opts.overwrite = true;
    let (r, _) = fetch_from_raw(resp, opts).await;
    r.unwrap();
    assert_eq!(fs::read(dst.path().join("data.bin")).unwrap(), b"hello");
}
