//! The browser peer's files at `/`, over a real socket: the headers every page carries, and
//! either the embedded app (a build after `npm run build` in `web/`) or the page that says how
//! to build it.

mod common;

use common::*;
use tokio::net::TcpStream;
use yakk_signal::Config;

const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn root_serves_the_app_or_how_to_build_it() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (status, headers, body) = http_get(TcpStream::connect(addr).await.unwrap(), "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(get(&headers, "content-security-policy"), Some(CSP));
    assert_eq!(get(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(get(&headers, "referrer-policy"), Some("no-referrer"));
    if yakk_signal::app_built() {
        assert!(body.contains("app.js"), "{body}");
        for (path, kind) in [
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
        ] {
            let (status, headers, _) =
                http_get(TcpStream::connect(addr).await.unwrap(), path).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(get(&headers, "content-type"), Some(kind));
            assert_eq!(get(&headers, "content-security-policy"), Some(CSP));
            assert_eq!(get(&headers, "cache-control"), Some("no-cache"));
            assert!(get(&headers, "etag").is_some());
        }
    } else {
        assert!(body.contains("npm run build"), "{body}");
        let (status, _, _) = http_get(TcpStream::connect(addr).await.unwrap(), "/app.js").await;
        assert_eq!(status, 404);
    }
    server.shutdown().await;
}
