//! The server over TLS (wss:// and https://) with a self-signed certificate made in the test.

mod common;

use common::*;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use yakk_signal::Config;

fn certificate() -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    tls_certificate(&["localhost"])
}

#[tokio::test]
async fn rooms_and_hello_over_tls() {
    let (cert, key) = certificate();
    let config = Config {
        tls: Some(yakk_signal::tls_config(vec![cert.clone()], key).unwrap()),
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let tls = tls_connector(&cert, &[]);
    let name = || ServerName::try_from("localhost").unwrap();

    let io = tls
        .connect(name(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (status, _, body) = http_get(io, "/hello").await;
    assert_eq!((status, body.as_str()), (200, r#"{"Hello":"World"}"#));

    let io = tls
        .connect(name(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws/", addr.port()), io)
            .await
            .unwrap();
    let mut owner = Client { ws };
    let created = owner.recv().await;
    assert_eq!(created.msg_type, "YAKKMSG_ROOMCREATED");

    let io = tls
        .connect(name(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!(
            "wss://localhost:{}/ws/?roomID={}",
            addr.port(),
            created.payload
        ),
        io,
    )
    .await
    .unwrap();
    let mut joiner = Client { ws };
    assert_eq!(joiner.recv().await, env("YAKKMSG_ROOMJOINED", "1", 0, 1));
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", 1, 0));

    // Plain text to a TLS port fails the handshake and hurts nobody.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET /hello HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut buf),
    )
    .await;
    owner.send(&env("YAKKMSG_ANSWER", "a", 0, 1)).await;
    assert_eq!(joiner.recv().await, env("YAKKMSG_ANSWER", "a", 0, 1));
    server.shutdown().await;
}
