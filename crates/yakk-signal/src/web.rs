//! The browser peer: the web app (`web/` of the workspace) served at `/`, embedded at build time
//! by `build.rs` when `web/dist/` was built; otherwise `/` says how to build it.
//!
//! Every page and file goes out with a strict Content-Security-Policy (this origin only: no
//! inline script or style, no third-party origin; `connect-src 'self'` covers the same-origin
//! `ws://` of the signalling socket in CSP 3), `nosniff`, no referrer, and `no-cache` with an
//! ETag: the browser revalidates, and gets a 304 while the binary serves the same build.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// One file of the built app.
pub(crate) struct Asset {
    /// Where it is served, e.g. `/app.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted strong ETag of the content.
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The policy of every response of the web app.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether this binary embeds the web app.
pub fn app_built() -> bool {
    !ASSETS.is_empty()
}

/// What `/` shows when the binary was built without the web app.
const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>yakk</title></head><body>\n\
<h1>yakk</h1>\n\
<p>This yakk was built without its web app, so this server cannot offer the browser peer.</p>\n\
<p>To build it, in a checkout of yakk:</p>\n\
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build\ncd .. &amp;&amp; cargo build --release</pre>\n\
<p>The second build embeds <code>web/dist/</code> (or the folder <code>YAKK_WEB_DIST</code> names). \
The command-line peers (<code>yakk filesend</code>, <code>yakk filereceive</code>) work either way.</p>\n\
</body></html>\n";

/// Answers a GET for `path` if it is the web app's, `None` otherwise.
pub(crate) fn serve(path: &str, req: &HeaderMap) -> Option<Response<Full<Bytes>>> {
    serve_from(ASSETS, path, req)
}

pub(crate) fn serve_from(
    assets: &[Asset],
    path: &str,
    req: &HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let want = if path == "/" { "/index.html" } else { path };
    let Some(asset) = assets.iter().find(|a| a.path == want) else {
        if path == "/" || path == "/index.html" {
            let mut resp = Response::new(Full::new(Bytes::from_static(NOT_BUILT.as_bytes())));
            secure(resp.headers_mut(), "text/html; charset=utf-8");
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Some(resp);
        }
        return None;
    };
    let matches = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == asset.etag || t.trim() == "*");
    let mut resp = if matches {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Full::new(Bytes::from_static(asset.body)))
    };
    let h = resp.headers_mut();
    secure(h, asset.content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    Some(resp)
}

/// The headers every response of the web app carries.
pub(crate) fn secure(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const FAKE: &[Asset] = &[
        Asset {
            path: "/index.html",
            content_type: "text/html; charset=utf-8",
            etag: "\"1-2\"",
            body: b"<!doctype html><title>x</title>",
        },
        Asset {
            path: "/app.js",
            content_type: "text/javascript; charset=utf-8",
            etag: "\"3-4\"",
            body: b"console.log(1)",
        },
    ];

    async fn body(r: Response<Full<Bytes>>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    fn header(r: &Response<Full<Bytes>>, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    fn assert_secure(r: &Response<Full<Bytes>>) {
        assert_eq!(header(r, header::CONTENT_SECURITY_POLICY), CSP);
        assert_eq!(header(r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(r, header::REFERRER_POLICY), "no-referrer");
    }

    #[tokio::test]
    async fn built_app_is_served_with_its_headers() {
        let none = HeaderMap::new();
        let r = serve_from(FAKE, "/", &none).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_secure(&r);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header(&r, header::ETAG), "\"1-2\"");
        assert_eq!(body(r).await, FAKE[0].body);

        let r = serve_from(FAKE, "/app.js", &none).unwrap();
        assert_secure(&r);
        assert_eq!(
            header(&r, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(body(r).await, FAKE[1].body);

        // Revalidation: the same build answers 304 without a body.
        let mut cond = HeaderMap::new();
        cond.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"3-4\""));
        let r = serve_from(FAKE, "/app.js", &cond).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_secure(&r);
        assert!(body(r).await.is_empty());

        assert!(serve_from(FAKE, "/style.css", &none).is_none());
        assert!(serve_from(FAKE, "/../Cargo.toml", &none).is_none());
    }

    #[tokio::test]
    async fn without_the_app_the_root_says_how_to_build_it() {
        let none = HeaderMap::new();
        let r = serve_from(&[], "/", &none).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_secure(&r);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        let text = String::from_utf8(body(r).await).unwrap();
        assert!(text.contains("npm ci &amp;&amp; npm run build"), "{text}");
        assert!(serve_from(&[], "/app.js", &none).is_none());
    }
}
