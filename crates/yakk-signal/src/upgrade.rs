//! The `/ws/` route: the WebSocket handshake, what its query asks for ([`Intent`]), and the
//! per-address cap on open sockets.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::conn;
use crate::metrics::Rejection;
use crate::ratelimit::ClientKey;
use crate::registry::CreateOptions;
use crate::server::{Shared, text};

/// What the upgrade request asked for.
#[derive(Debug)]
pub(crate) enum Intent {
    Create(CreateOptions),
    Join(String),
    /// An owner taking its room back with the secret it got at creation.
    Reclaim {
        name: String,
        secret: String,
    },
}

/// Why a `/ws/` query is unusable; its text is the `YAKKMSG_ERROR` payload the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IntentError {
    #[error("reclaim needs the roomID of the room to take back")]
    ReclaimWithoutRoom,
    #[error("Invalid maxPeers: expected a number from 1 to {max_joiners}")]
    MaxPeers { max_joiners: usize },
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// What the `/ws/` query asks for, or why it is unusable.
fn parse_intent(query: Option<&str>, max_joiners: usize) -> Result<Intent, IntentError> {
    let mut room = None;
    let mut reclaim = None;
    let mut keep_alive = false;
    let mut max_peers = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "roomID" => room = Some(v.into_owned()),
            "reclaim" => reclaim = Some(v.into_owned()),
            "keepAlive" => keep_alive = v.eq_ignore_ascii_case("true") || v == "1",
            "maxPeers" => max_peers = Some(v.into_owned()),
            _ => {}
        }
    }
    match (room, reclaim) {
        (Some(name), Some(secret)) => Ok(Intent::Reclaim { name, secret }),
        (Some(name), None) => Ok(Intent::Join(name)),
        (None, Some(_)) => Err(IntentError::ReclaimWithoutRoom),
        (None, None) => {
            let max_joiners = match max_peers {
                None => None,
                Some(v) => match v.parse::<u32>() {
                    // More than the room can hold is capped by the mailbox limit anyway.
                    Ok(n) if n >= 1 => Some(n),
                    _ => return Err(IntentError::MaxPeers { max_joiners }),
                },
            };
            Ok(Intent::Create(CreateOptions {
                keep_alive,
                max_joiners,
            }))
        }
    }
}

/// The host a client reached the server at, for the relay's `turns:` URL: the authority of an
/// absolute request target, else the Host header, without its port; if neither is a DNS name
/// or an IP literal, the server's own address on the connection (`local`).
pub(crate) fn client_host(uri: &Uri, headers: &HeaderMap, local: SocketAddr) -> String {
    uri.authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            Some(host.parse::<Authority>().ok()?.host().to_string())
        })
        .and_then(|h| url_host(&h))
        .unwrap_or_else(|| ip_host(local.ip()))
}

/// `host` as it goes into a URL, if it is a DNS name or an IP literal (IPv6 in brackets).
fn url_host(host: &str) -> Option<String> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|ip| format!("[{ip}]"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    dns.then(|| name.to_ascii_lowercase())
}

fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

pub(crate) fn upgrade(
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let turns_host = shared
        .config
        .ice
        .relay
        .as_ref()
        .is_some_and(|r| r.turns_port.is_some())
        .then(|| client_host(req.uri(), req.headers(), local));
    let headers = req.headers();
    let is_upgrade = header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
    else {
        shared.metrics.reject(Rejection::BadRequest);
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket upgrade\n",
        );
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        shared.metrics.reject(Rejection::BadRequest);
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "WebSocket version 13 only\n",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let accept = derive_accept_key(key.as_bytes());
    let intent = parse_intent(
        req.uri().query(),
        shared
            .config
            .limits
            .max_mailboxes_per_room
            .saturating_sub(1),
    );
    let Some(slot) = AddressSlot::take(&shared, peer) else {
        shared.metrics.reject(Rejection::TooManyFromAddress);
        tracing::debug!(%peer, "refused a WebSocket: too many open from this address");
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "too many connections from your address, try again later\n",
        );
    };
    let Ok(permit) = shared.ws_permits.clone().try_acquire_owned() else {
        shared.metrics.reject(Rejection::TooManyConnections);
        tracing::debug!(%peer, "refused a WebSocket: too many open");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many connections, try again later\n",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let s = shared.clone();
    shared.tracker.spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(s.ws_config),
                )
                .await;
                s.metrics.connections.fetch_add(1, Ordering::Relaxed);
                s.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
                conn::run(s.clone(), ws, peer, intent, turns_host).await;
                s.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(%peer, "WebSocket upgrade failed: {e}"),
        }
        drop(permit);
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// One WebSocket counted against its client address's cap; the count is given back when this
/// is dropped (the connection ended, or it never came up).
struct AddressSlot {
    shared: Arc<Shared>,
    client: ClientKey,
}

impl AddressSlot {
    fn take(shared: &Arc<Shared>, peer: SocketAddr) -> Option<AddressSlot> {
        let client = ClientKey::from(peer.ip());
        shared
            .state()
            .per_address
            .acquire(client)
            .then(|| AddressSlot {
                shared: shared.clone(),
                client,
            })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.shared.state().per_address.release(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_host_is_that_of_its_request() {
        let local: SocketAddr = "192.0.2.5:443".parse().unwrap();
        let host = |uri: &str, host: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(h) = host {
                headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            }
            client_host(&uri.parse().unwrap(), &headers, local)
        };
        assert_eq!(host("/ws/", Some("rv.example.org")), "rv.example.org");
        assert_eq!(host("/ws/", Some("RV.Example.org:8443")), "rv.example.org");
        assert_eq!(host("/ws/", Some("rv.example.org.")), "rv.example.org");
        assert_eq!(host("/ws/", Some("127.0.0.1:6006")), "127.0.0.1");
        assert_eq!(host("/ws/", Some("[::1]:6006")), "[::1]");
        assert_eq!(host("/ws/", Some("[0:0::1]")), "[::1]");
        assert_eq!(
            host("https://other.example.org/ws/", Some("rv.example.org")),
            "other.example.org"
        );
        // No usable Host: the server's own address on the connection.
        assert_eq!(host("/ws/", None), "192.0.2.5");
        for bad in [
            "",
            "a b",
            "a..b",
            "x_y.org",
            "[fe80::1%25eth0]",
            "[nope]",
            "é.org",
        ] {
            assert_eq!(host("/ws/", Some(bad)), "192.0.2.5", "{bad:?}");
        }
        let v6: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        assert_eq!(
            client_host(&"/".parse().unwrap(), &HeaderMap::new(), v6),
            "[2001:db8::5]"
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.9]:443".parse().unwrap();
        assert_eq!(
            client_host(&"/".parse().unwrap(), &HeaderMap::new(), mapped),
            "192.0.2.9"
        );
    }

    #[test]
    fn intents() {
        assert!(matches!(
            parse_intent(None, 15),
            Ok(Intent::Create(CreateOptions {
                keep_alive: false,
                max_joiners: None
            }))
        ));
        assert!(matches!(
            parse_intent(Some("keepAlive=true&maxPeers=1"), 15),
            Ok(Intent::Create(CreateOptions {
                keep_alive: true,
                max_joiners: Some(1)
            }))
        ));
        assert!(matches!(
            parse_intent(Some("keepAlive=false"), 15),
            Ok(Intent::Create(CreateOptions {
                keep_alive: false,
                ..
            }))
        ));
        assert!(
            matches!(parse_intent(Some("roomID=12%33"), 15), Ok(Intent::Join(n)) if n == "123")
        );
        assert!(matches!(
            parse_intent(Some("roomID=7&reclaim=abc"), 15),
            Ok(Intent::Reclaim { name, secret }) if name == "7" && secret == "abc"
        ));
        assert!(parse_intent(Some("reclaim=abc"), 15).is_err());
        assert!(parse_intent(Some("maxPeers=0"), 15).is_err());
        assert!(parse_intent(Some("maxPeers=x"), 15).is_err());
    }
}
