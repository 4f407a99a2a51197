//! `yakk filesend` toward a yakk/1 receiver (issue 18): the original program's downloader asks
//! `HEAD /yakkfilesendreceive` on one channel and then `GET` on a new one. The sender answers
//! both, each on its own channel; a request that fails, or a range that stops before the end
//! of the file, does not end the session.
//!
//! The receiver here is `yakk client --legacy`, which carries each local TCP connection on a
//! new channel as the original's downloader does, so raw HTTP requests can be sent one per
//! channel and the answers checked byte for byte.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on a new connection (a new channel) and returns the whole answer. No
/// half-close: yakk/1 would close the channel both ways.
async fn ask(addr: &str, request: &str) -> Vec<u8> {
    let run = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        answer
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("answered in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn head_then_get_on_separate_channels_and_a_failed_request_or_a_part_does_not_end_the_session()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(30_001, 18);
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let mut sender = Yakk::start(&[
        "filesend",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--legacy-only",
        path.to_str().unwrap(),
    ]);
    let code = sender.event("code", 30).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut receiver = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--legacy",
        &code,
    ]);
    assert_eq!(receiver.event("connected", 30).await["protocol"], "yakk/1");
    let addr = receiver.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();

    // What grab sends first.
    let head = ask(
        &addr,
        "HEAD /yakkfilesendreceive HTTP/1.1\r\nHost: localhost:6000\r\nUser-Agent: Go-http-client/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 200 OK\r\n\
         Content-Disposition: attachment; filename=report.bin\r\n\
         Content-Type: application/octet-stream\r\n\
         Accept-Ranges: bytes\r\n\
         Content-Length: 30001\r\n\
         Connection: close\r\n\
         \r\n"
    );

    // A request that fails: answered, reported, and the sender goes on.
    let nope = ask(
        &addr,
        "GET /elsewhere HTTP/1.1\r\nHost: localhost:6000\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8(nope).unwrap(),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    // The sender's first warning is that the session speaks yakk/1; the next one is this.
    let mut warning = sender.event("warning", 10).await;
    if warning["message"]
        .as_str()
        .unwrap()
        .contains("speaks yakk/1")
    {
        warning = sender.event("warning", 10).await;
    }
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("unexpected request GET /elsewhere"),
        "{warning}"
    );

    // A GET for a range that stops before the end: served, and the session goes on (the
    // receiver does not hold the file yet).
    let part = ask(
        &addr,
        "GET /yakkfilesendreceive HTTP/1.1\r\nHost: localhost:6000\r\nRange: bytes=100-199\r\n\r\n",
    )
    .await;
    let end = part
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    assert!(part.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
    assert!(part[end..] == data[100..200], "the range intact");

    // The GET, on yet another channel: the whole file, then the sender is done.
    let get = ask(
        &addr,
        "GET /yakkfilesendreceive HTTP/1.1\r\nHost: localhost:6000\r\nConnection: close\r\n\r\n",
    )
    .await;
    let end = get
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    assert!(get.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        String::from_utf8_lossy(&get[..end]).contains("\r\nContent-Length: 30001\r\n"),
        "{}",
        String::from_utf8_lossy(&get[..end])
    );
    assert_eq!(get.len() - end, data.len(), "the whole body");
    assert!(get[end..] == data[..], "the body intact");
    let done = sender.event("done", 30).await;
    assert_eq!(done["bytes"], 30_001);
    assert_eq!(sender.exit_code(30).await, 0, "{}", sender.stderr_text());
}
