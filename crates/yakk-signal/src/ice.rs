//! The ICE servers (STUN, TURN) the signalling server advertises to the peers of a room, and the
//! time-limited TURN credentials of the "TURN REST API" scheme that coturn's `use-auth-secret`
//! checks: username `"<unix expiry>:<room>"`, password `base64(HMAC-SHA1(secret, username))`.
//!
//! Who gets them, and for how long. The owner gets credentials in its `YAKKMSG_ROOMCREATED`,
//! each joiner fresh ones in its `YAKKMSG_ROOMJOINED`; they are the only messages of the server
//! a peer reads ICE servers from, and the server pushes nothing by itself, so an owner cannot be
//! handed credentials later, once a joiner has come, without a change to the peers' protocol
//! (and an owner from before such a change would then have no relay at all). Anyone who can
//! create a room (rate-limited per address) can therefore obtain credentials, and what bounds
//! their use is their lifetime (`--turn-ttl`, 10 minutes by default): coturn checks the expiry
//! only when a TURN session authenticates for the first time (its allocation); refreshes,
//! permissions and channel bindings of that allocation are checked against the key it kept, so
//! a relay started in time keeps working after the credentials expire (coturn's
//! README.turnserver, "TURN REST API": the password "becomes the session parameter and is never
//! expiring"). A peer allocates its relays when its peer connections are made: a joiner within
//! seconds of joining, an owner when each joiner arrives. 10 minutes covers a joiner's whole
//! setup with room for clock differences between this server and the TURN server, and an
//! owner's first joiners; an owner whose joiner comes later has no relay candidate of its own
//! (the joiner's relay still works wherever one relay suffices).
//!
//! Secrets never reach a log: the `Debug` impls here print `<redacted>`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use yakk_wire::IceServer;

/// How TURN clients authenticate.
#[derive(Clone, Default)]
pub enum TurnAuth {
    /// No credentials (an open TURN server, or none configured).
    #[default]
    None,
    /// The same username and password for everyone.
    Static { username: String, password: String },
    /// Per-room credentials derived from a secret shared with the TURN server, valid for `ttl`.
    Secret { secret: String, ttl: Duration },
}

impl fmt::Debug for TurnAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TurnAuth::None => f.write_str("None"),
            TurnAuth::Static { username, .. } => f
                .debug_struct("Static")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            TurnAuth::Secret { ttl, .. } => f
                .debug_struct("Secret")
                .field("secret", &"<redacted>")
                .field("ttl", ttl)
                .finish(),
        }
    }
}

/// What the server tells peers about ICE servers.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:` URLs.
    pub stun: Vec<String>,
    /// `turn:` / `turns:` URLs.
    pub turn: Vec<String>,
    pub turn_auth: TurnAuth,
    /// The embedded relay (`yakk signal --turn-listen`), once it listens.
    pub relay: Option<RelayIce>,
}

/// The embedded relay's URLs and the secret of its time-limited credentials.
#[derive(Clone)]
pub struct RelayIce {
    /// `turn:` URLs (UDP, TCP).
    pub urls: Vec<String>,
    pub secret: String,
    pub ttl: Duration,
    /// The signalling server's TLS port, when the relay also serves TURN over TLS there: each
    /// client is told `turns:<host>:<port>?transport=tcp` with the host it reached the
    /// server at (see [`IceConfig::servers_for`]).
    pub turns_port: Option<u16>,
}

impl fmt::Debug for RelayIce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayIce")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("turns_port", &self.turns_port)
            .finish()
    }
}

/// `"<unix time of now + ttl>"`, the expiry part of a REST username.
fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    now.checked_add(ttl)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

impl IceConfig {
    /// The `IceServers` field for a room reply, or `None` when nothing is configured (the reply
    /// is then byte for byte a yakk/1 server's). `host` is the name (or IP literal) the client
    /// reached this server at: the host of the embedded relay's `turns:` URL, which the client
    /// verifies the server's certificate against.
    pub fn servers_for(
        &self,
        room: &str,
        now: SystemTime,
        host: Option<&str>,
    ) -> Option<Vec<IceServer>> {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let (username, credential) = match &self.turn_auth {
                TurnAuth::None => (None, None),
                TurnAuth::Static { username, password } => {
                    (Some(username.clone()), Some(password.clone()))
                }
                TurnAuth::Secret { secret, ttl } => {
                    let (u, c) = turn_rest_credentials(secret, expiry(now, *ttl), room);
                    (Some(u), Some(c))
                }
            };
            servers.push(IceServer {
                urls: self.turn.clone(),
                username,
                credential,
            });
        }
        if let Some(relay) = &self.relay {
            let (u, c) = turn_rest_credentials(&relay.secret, expiry(now, relay.ttl), room);
            let mut urls = relay.urls.clone();
            if let (Some(port), Some(host)) = (relay.turns_port, host) {
                urls.push(format!("turns:{host}:{port}?transport=tcp"));
            }
            servers.push(IceServer {
                urls,
                username: Some(u),
                credential: Some(c),
            });
        }
        (!servers.is_empty()).then_some(servers)
    }
}

/// TURN REST API credentials: `("<expiry>:<user>", base64(HMAC-SHA1(secret, username)))`.
pub fn turn_rest_credentials(secret: &str, expiry_unix: u64, user: &str) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    let credential = rest_password(secret, &username);
    (username, credential)
}

/// The TURN REST password of `username`: `base64(HMAC-SHA1(secret, username))`.
pub(crate) fn rest_password(secret: &str, username: &str) -> String {
    // HMAC takes keys of any length (RFC 2104 hashes long ones): `new_from_slice` cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials_match_hmac_sha1() {
        // Computed independently: printf '1700000000:123' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let (u, c) = turn_rest_credentials("north", 1_700_000_000, "123");
        assert_eq!(u, "1700000000:123");
        assert_eq!(c, EXPECTED_CREDENTIAL);
    }

    const EXPECTED_CREDENTIAL: &str = "lcHAeDsjSRiPOQeOPzZ4U/oU1ew=";

    #[test]
    fn nothing_configured_means_no_field() {
        assert_eq!(
            IceConfig::default().servers_for("1", SystemTime::now(), None),
            None
        );
    }

    #[test]
    fn secret_credentials_expire_after_ttl_and_name_the_room() {
        let ice = IceConfig {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_auth: TurnAuth::Secret {
                secret: "north".into(),
                ttl: Duration::from_secs(3600),
            },
            relay: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_699_996_400);
        let servers = ice.servers_for("123", now, Some("example.org")).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, vec!["stun:127.0.0.1:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1700000000:123"));
        assert_eq!(servers[1].credential.as_deref(), Some(EXPECTED_CREDENTIAL));
        let dbg = format!("{ice:?}");
        assert!(!dbg.contains("north"), "secret leaked into Debug: {dbg}");
    }

    #[test]
    fn the_embedded_relay_offers_turns_with_the_clients_host() {
        let ice = IceConfig {
            relay: Some(RelayIce {
                urls: vec!["turn:203.0.113.7:3478?transport=udp".into()],
                secret: "north".into(),
                ttl: Duration::from_secs(600),
                turns_port: Some(443),
            }),
            ..IceConfig::default()
        };
        let now = SystemTime::now();
        let servers = ice.servers_for("5", now, Some("rv.example.org")).unwrap();
        assert_eq!(
            servers[0].urls,
            [
                "turn:203.0.113.7:3478?transport=udp",
                "turns:rv.example.org:443?transport=tcp"
            ]
        );
        // The same credentials cover both.
        assert!(servers[0].username.as_deref().unwrap().ends_with(":5"));
        let servers = ice.servers_for("5", now, Some("[::1]")).unwrap();
        assert_eq!(servers[0].urls[1], "turns:[::1]:443?transport=tcp");
        // Without a TLS port, no turns: URL, whatever the host.
        let ice = IceConfig {
            relay: ice.relay.map(|r| RelayIce {
                turns_port: None,
                ..r
            }),
            ..IceConfig::default()
        };
        let servers = ice.servers_for("5", now, Some("rv.example.org")).unwrap();
        assert_eq!(servers[0].urls, ["turn:203.0.113.7:3478?transport=udp"]);
    }

    #[test]
    fn static_credentials() {
        let ice = IceConfig {
            stun: vec![],
            turn: vec!["turns:127.0.0.1:5349".into()],
            turn_auth: TurnAuth::Static {
                username: "u".into(),
                password: "hunter2".into(),
            },
            relay: None,
        };
        let servers = ice.servers_for("9", SystemTime::now(), None).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].credential.as_deref(), Some("hunter2"));
        assert!(!format!("{ice:?}").contains("hunter2"));
    }
}
