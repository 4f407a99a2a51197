//! Configuration: the `yakk signal` command-line flags ([`SignalArgs`]) and the server's
//! programmatic configuration ([`Config`]) they turn into.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ice::{IceConfig, TurnAuth};
use crate::registry::RegistryLimits;
use crate::turn::RelayConfig;

/// A random secret for the embedded relay's credentials, when none is given: they are
/// derived and checked in this process only.
fn random_secret() -> String {
    use base64::Engine as _;
    use rand::{Rng as _, SeedableRng as _};
    let mut bytes = [0u8; 24];
    rand::rngs::StdRng::from_os_rng().fill(&mut bytes);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The environment variable `--turn-password` is read from (as the peer commands' `--turn-pass`).
pub const TURN_PASSWORD_ENV: &str = "YAKK_TURN_PASSWORD";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the TLS certificate chain from {path}: {source}")]
    TlsCert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot read the TLS private key from {path}: {source}")]
    TlsKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the TLS certificate and key do not work together: {0}")]
    Tls(#[from] rustls::Error),
    #[error("--turn-user, --turn-password and --turn-secret need at least one --turn URL")]
    TurnCredentialsWithoutServer,
    #[error("--turn-password needs --turn-user (or give peers credentials from --turn-secret)")]
    TurnPasswordWithoutUser,
    #[error(
        "--turn-listen {0} does not say which address peers reach the relay at: give --turn-relay-ip PUBLIC_IP"
    )]
    RelayIpUnspecified(SocketAddr),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("--max-message-bytes must be between 256 and 16777216")]
    MessageSize,
    #[error("cannot read the Redis CA certificates from {path}: {source}")]
    RedisCa {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// An inclusive range of ports, `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let (low, high) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, e.g. 49152-65535, not {s:?}"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let (low, high) = (port(low)?, port(high)?);
    if low > high {
        return Err(format!("{low} is above {high}"));
    }
    Ok(PortRange(low, high))
}

/// Flags of `yakk signal`. Durations take units: `90s`, `5m`, `1h`, `24h`.
#[derive(Clone, clap::Args)]
pub struct SignalArgs {
    /// Address and port to listen on for HTTP and WebSocket connections.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6006")]
    pub listen: SocketAddr,

    /// Largest WebSocket frame or message accepted from a client, in bytes; a client that
    /// sends a larger one is disconnected with close code 1009.
    #[arg(long, value_name = "BYTES", default_value_t = yakk_wire::MAX_ENVELOPE)]
    pub max_message_bytes: usize,

    /// Most WebSockets in one room at once, the owner's included.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_mailboxes_per_room: usize,

    /// Most live rooms; further room creations are refused until some close.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Most concurrent WebSocket connections; further upgrade requests get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most concurrent WebSocket connections from one client IP address (IPv6: per /64);
    /// further upgrade requests from it get HTTP 429; 0 disables. The embedded relay bounds its
    /// TURN-over-TCP and TURN-over-TLS connections from one address by the same number, each
    /// kind apart.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Room creations allowed per client IP address (IPv6: per /64) per minute; 0 disables.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub creates_per_minute: u32,

    /// Join attempts (successful or not) allowed per client IP address per minute; 0 disables.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub joins_per_minute: u32,

    /// Close a WebSocket when no message was relayed to or from it for this long (a message
    /// to itself or to nobody does not count).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close a WebSocket that is in no room (its join was refused: unknown room, room full)
    /// this long after it connected.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub lobby_timeout: Duration,

    /// Close every WebSocket of a room and delete it this long after its creation.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub room_lifetime: Duration,

    /// Delete a room this long after its last WebSocket left.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub empty_room_grace: Duration,

    /// The same, for rooms created with keepAlive=true.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub keep_alive_grace: Duration,

    /// Send a WebSocket ping this often.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Close a WebSocket from which nothing (not even a pong) arrived for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Bytes of relayed messages that may wait for one slow client before it is disconnected.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    pub mailbox_queue_bytes: usize,

    /// Also answer STUN Binding requests on this UDP address (e.g. 0.0.0.0:3478), so peers
    /// learn their public address from this server alone; advertise it with --stun.
    #[arg(long, value_name = "ADDR")]
    pub stun_listen: Option<SocketAddr>,

    /// STUN server URL to advertise to peers, e.g. stun:stun.example.org:3478 (repeatable).
    #[arg(long = "stun", value_name = "URL")]
    pub stun: Vec<String>,

    /// TURN server URL to advertise to peers, e.g. turn:turn.example.org:3478 (repeatable).
    #[arg(long = "turn", value_name = "URL")]
    pub turn: Vec<String>,

    /// Static TURN username given to every peer (with --turn-password).
    #[arg(
        long,
        value_name = "NAME",
        requires = "turn_password",
        conflicts_with = "turn_secret"
    )]
    pub turn_user: Option<String>,

    /// Static TURN password given to every peer (with --turn-user).
    #[arg(
        long,
        visible_alias = "turn-pass",
        value_name = "PASSWORD",
        env = "YAKK_TURN_PASSWORD",
        hide_env_values = true
    )]
    // Not `requires = "turn_user"`: the variable may be set for the peer commands, which read
    // it too; `Config::from_args` refuses the flag alone and leaves the variable alone unused.
    pub turn_password: Option<String>,

    /// Secret shared with the TURN server (coturn's static-auth-secret): peers get time-limited
    /// credentials derived from it instead of the secret itself.
    #[arg(
        long,
        value_name = "SECRET",
        env = "YAKK_TURN_SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,

    /// How long credentials derived from --turn-secret can start a relay, from the room's
    /// creation (owner) or join (joiner); a relay started in time outlives them with coturn.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub turn_ttl: Duration,

    /// Also run a TURN relay in this process, on this address, UDP and TCP (e.g.
    /// 0.0.0.0:3478); with --tls-cert, also TURN over TLS on the --listen port. Room members
    /// get time-limited credentials for it (from --turn-secret, or a random secret when none
    /// is given) and its turn: URLs (and turns:HOST:PORT, HOST as they reached this server),
    /// beside any --turn.
    #[arg(long, value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,

    /// The public address of this machine, written into the relay's allocations and its
    /// advertised URLs (default: the --turn-listen address, which then may not be 0.0.0.0).
    #[arg(long, value_name = "IP", requires = "turn_listen")]
    pub turn_relay_ip: Option<IpAddr>,

    /// UDP ports of the relayed addresses, LOW-HIGH (open them in the firewall).
    #[arg(long, value_name = "LOW-HIGH", default_value = "49152-65535", value_parser = parse_ports)]
    pub turn_ports: PortRange,

    /// Most live allocations on the relay; more are refused (486, Allocation Quota Reached).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub turn_max_allocations: usize,

    /// Most live allocations for one set of credentials (one side of a room: its lanes, and
    /// an owner's joiners).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub turn_max_per_user: usize,

    /// Bytes per second each allocation may relay each way; more is dropped (0: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub turn_max_rate: u64,

    /// Let the relay reach loopback and private addresses too (a rendezvous on a LAN); by
    /// default it relays only to Internet addresses.
    #[arg(long, requires = "turn_listen")]
    pub turn_allow_private_peers: bool,

    /// PEM certificate chain: serve HTTPS and wss:// instead of plain HTTP (with --tls-key);
    /// with --turn-listen, the same port serves TURN over TLS (turns:) too.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Share rooms with every other instance that uses this Redis (or Valkey):
    /// redis://HOST:PORT/DB (redis://:PASSWORD@HOST:PORT/DB with a password), or rediss://… for
    /// TLS. Rooms created through one instance can be joined through any other, owners get a
    /// secret to take their room back from any instance, and SIGTERM drains the instance
    /// (clients are told to reconnect).
    #[arg(
        long,
        value_name = "URL",
        env = "YAKK_REDIS_URL",
        hide_env_values = true
    )]
    pub redis: Option<String>,

    /// With a rediss:// URL: PEM certificates of the CA that signed Redis's certificate, to
    /// trust instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca: Option<PathBuf>,

    /// With --redis: how long a room whose owner lost its connection stays available for the
    /// owner to take back (at least its empty-room grace).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub reclaim_grace: Duration,
}

impl fmt::Debug for SignalArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("SignalArgs")
            .field("listen", &self.listen)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_mailboxes_per_room", &self.max_mailboxes_per_room)
            .field("max_rooms", &self.max_rooms)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("creates_per_minute", &self.creates_per_minute)
            .field("joins_per_minute", &self.joins_per_minute)
            .field("idle_timeout", &self.idle_timeout)
            .field("lobby_timeout", &self.lobby_timeout)
            .field("room_lifetime", &self.room_lifetime)
            .field("empty_room_grace", &self.empty_room_grace)
            .field("keep_alive_grace", &self.keep_alive_grace)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("mailbox_queue_bytes", &self.mailbox_queue_bytes)
            .field("stun_listen", &self.stun_listen)
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("turn_user", &self.turn_user)
            .field("turn_password", &redact(&self.turn_password))
            .field("turn_secret", &redact(&self.turn_secret))
            .field("turn_ttl", &self.turn_ttl)
            .field("turn_listen", &self.turn_listen)
            .field("turn_relay_ip", &self.turn_relay_ip)
            .field("turn_ports", &self.turn_ports)
            .field("turn_max_allocations", &self.turn_max_allocations)
            .field("turn_max_per_user", &self.turn_max_per_user)
            .field("turn_max_rate", &self.turn_max_rate)
            .field("turn_allow_private_peers", &self.turn_allow_private_peers)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field(
                "redis",
                &self.redis.as_deref().map(crate::redis_store::redact_url),
            )
            .field("redis_ca", &self.redis_ca)
            .field("reclaim_grace", &self.reclaim_grace)
            .finish()
    }
}

/// Everything the server needs besides its listening socket.
#[derive(Clone)]
pub struct Config {
    /// Room and mailbox limits, grace periods and lifetimes.
    pub limits: RegistryLimits,
    /// Largest frame or message accepted from a client.
    pub max_message_bytes: usize,
    /// Most concurrent WebSocket connections.
    pub max_connections: usize,
    /// Most concurrent WebSocket connections per client address (IPv6: per /64; 0: no limit).
    pub max_connections_per_ip: usize,
    /// A WebSocket still in no room this long after it connected is closed.
    pub lobby_timeout: Duration,
    /// Room creations per client address per minute (0: unlimited).
    pub creates_per_minute: u32,
    /// Join attempts per client address per minute (0: unlimited).
    pub joins_per_minute: u32,
    /// Client addresses tracked by each rate limiter at most.
    pub rate_limit_clients: usize,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// A write to a client that does not complete within this is treated as a dead client.
    pub send_timeout: Duration,
    /// Bytes queued for one mailbox before it is disconnected as a slow consumer.
    pub mailbox_queue_bytes: usize,
    /// How often expiry (grace, idle, lifetime) is checked.
    pub sweep_interval: Duration,
    /// Time allowed for a TLS handshake and for an HTTP request's headers.
    pub handshake_timeout: Duration,
    /// On shutdown, how long open connections get to close.
    pub shutdown_grace: Duration,
    pub ice: IceConfig,
    /// Run a TURN relay in the process (its URLs and credentials are added to `ice` when it
    /// starts).
    pub relay: Option<RelayConfig>,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Keep rooms in this Redis, shared with other instances (`None`: in this process).
    pub redis_url: Option<String>,
    /// PEM certificates to trust for a `rediss://` URL instead of the system's roots.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// With Redis: how long an empty room stays available for its owner to reclaim.
    pub reclaim_grace: Duration,
    /// With Redis: how often the instance tells Redis it is alive (gone after three missed).
    pub heartbeat: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: RegistryLimits::default(),
            max_message_bytes: yakk_wire::MAX_ENVELOPE,
            max_connections: 20_000,
            max_connections_per_ip: 64,
            lobby_timeout: Duration::from_secs(10),
            creates_per_minute: 60,
            joins_per_minute: 60,
            rate_limit_clients: 100_000,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            mailbox_queue_bytes: 256 * 1024,
            sweep_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            ice: IceConfig::default(),
            relay: None,
            tls: None,
            redis_url: None,
            redis_ca_pem: None,
            reclaim_grace: Duration::from_secs(60),
            heartbeat: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("limits", &self.limits)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("lobby_timeout", &self.lobby_timeout)
            .field("creates_per_minute", &self.creates_per_minute)
            .field("joins_per_minute", &self.joins_per_minute)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("mailbox_queue_bytes", &self.mailbox_queue_bytes)
            .field("ice", &self.ice)
            .field("relay", &self.relay)
            .field("tls", &self.tls.is_some())
            .field(
                "redis_url",
                &self
                    .redis_url
                    .as_deref()
                    .map(crate::redis_store::redact_url),
            )
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The configuration the flags describe (reads the TLS files, if any).
    pub fn from_args(args: &SignalArgs) -> Result<Config, ConfigError> {
        for (name, v) in [
            ("--max-mailboxes-per-room", args.max_mailboxes_per_room),
            ("--max-rooms", args.max_rooms),
            ("--max-connections", args.max_connections),
            ("--mailbox-queue-bytes", args.mailbox_queue_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !(256..=16 << 20).contains(&args.max_message_bytes) {
            return Err(ConfigError::MessageSize);
        }
        if args.turn_user.is_none()
            && args.turn_password.is_some()
            && std::env::var_os(TURN_PASSWORD_ENV).is_none()
        {
            return Err(ConfigError::TurnPasswordWithoutUser);
        }
        let turn_auth = match (&args.turn_user, &args.turn_password, &args.turn_secret) {
            (_, _, Some(secret)) => TurnAuth::Secret {
                secret: secret.clone(),
                ttl: args.turn_ttl,
            },
            (Some(u), Some(p), None) => TurnAuth::Static {
                username: u.clone(),
                password: p.clone(),
            },
            _ => TurnAuth::None,
        };
        // A secret alone is the embedded relay's; other credentials are for --turn servers.
        let secret_for_relay =
            args.turn_listen.is_some() && matches!(turn_auth, TurnAuth::Secret { .. });
        if !matches!(turn_auth, TurnAuth::None) && args.turn.is_empty() && !secret_for_relay {
            return Err(ConfigError::TurnCredentialsWithoutServer);
        }
        let relay = match args.turn_listen {
            None => None,
            Some(listen) => {
                let relay_ip = match args.turn_relay_ip {
                    Some(ip) => ip,
                    None if listen.ip().is_unspecified() => {
                        return Err(ConfigError::RelayIpUnspecified(listen));
                    }
                    None => listen.ip(),
                };
                for (name, v) in [
                    ("--turn-max-allocations", args.turn_max_allocations),
                    ("--turn-max-per-user", args.turn_max_per_user),
                ] {
                    if v == 0 {
                        return Err(ConfigError::Zero(name));
                    }
                }
                Some(RelayConfig {
                    listen,
                    relay_ip,
                    ports: (args.turn_ports.0, args.turn_ports.1),
                    secret: args.turn_secret.clone().unwrap_or_else(random_secret),
                    tcp: true,
                    max_allocations: args.turn_max_allocations,
                    max_allocations_per_user: args.turn_max_per_user,
                    max_rate: args.turn_max_rate,
                    credential_ttl: args.turn_ttl,
                    allow_private_peers: args.turn_allow_private_peers,
                })
            }
        };
        // Credentials for the --turn servers only when there are some.
        let turn_auth = if args.turn.is_empty() {
            TurnAuth::None
        } else {
            turn_auth
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config_from_files(cert, key)?),
            _ => None,
        };
        Ok(Config {
            limits: RegistryLimits {
                max_rooms: args.max_rooms,
                max_mailboxes_per_room: args.max_mailboxes_per_room,
                empty_room_grace: args.empty_room_grace,
                keep_alive_grace: args.keep_alive_grace,
                idle_timeout: args.idle_timeout,
                room_lifetime: args.room_lifetime,
            },
            max_message_bytes: args.max_message_bytes,
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            lobby_timeout: args.lobby_timeout,
            creates_per_minute: args.creates_per_minute,
            joins_per_minute: args.joins_per_minute,
            ping_interval: args.ping_interval.max(Duration::from_millis(100)),
            ping_timeout: args.ping_timeout,
            mailbox_queue_bytes: args.mailbox_queue_bytes,
            ice: IceConfig {
                stun: args.stun.clone(),
                turn: args.turn.clone(),
                turn_auth,
                relay: None,
            },
            relay,
            tls,
            redis_url: args.redis.clone(),
            redis_ca_pem: match &args.redis_ca {
                None => None,
                Some(path) => Some(std::fs::read(path).map_err(|source| ConfigError::RedisCa {
                    path: path.clone(),
                    source,
                })?),
            },
            reclaim_grace: args.reclaim_grace,
            ..Config::default()
        })
    }
}

/// A TLS server configuration from PEM files.
pub fn tls_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ConfigError::TlsCert {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| ConfigError::TlsKey {
        path: key.to_path_buf(),
        source,
    })?;
    tls_config(certs, key)
}

/// A TLS server configuration from a certificate chain and its key (ring provider, TLS 1.2
/// and 1.3, ALPN http/1.1).
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SignalArgs,
    }

    fn parse(argv: &[&str]) -> Result<SignalArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("signal").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_match_the_documented_limits() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:6006".parse().unwrap());
        let c = Config::from_args(&args).unwrap();
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.limits.max_mailboxes_per_room, 16);
        assert_eq!(c.limits.max_rooms, 100_000);
        assert_eq!(c.max_connections, 20_000);
        assert_eq!(c.max_connections_per_ip, 64);
        assert_eq!((c.creates_per_minute, c.joins_per_minute), (60, 60));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.lobby_timeout, Duration::from_secs(10));
        assert!(matches!(c.ice.turn_auth, TurnAuth::None));
        // The flags' defaults are the embedded server's (Config::default) too.
        let d = Config::default();
        assert_eq!(
            (d.max_connections_per_ip, d.lobby_timeout),
            (c.max_connections_per_ip, c.lobby_timeout)
        );
        let secret = parse(&["--turn", "turn:127.0.0.1", "--turn-secret", "s"]).unwrap();
        assert!(matches!(
            Config::from_args(&secret).unwrap().ice.turn_auth,
            TurnAuth::Secret { ttl, .. } if ttl == Duration::from_secs(600)
        ));
        assert_eq!(c.limits.room_lifetime, Duration::from_secs(86400));
        assert_eq!(c.limits.empty_room_grace, Duration::from_secs(5));
        assert_eq!(c.limits.keep_alive_grace, Duration::from_secs(120));
        assert!(c.tls.is_none());
        assert!(c.redis_url.is_none());
        let r = parse(&["--redis", "redis://:pw@127.0.0.1:6379/2"]).unwrap();
        let c = Config::from_args(&r).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://:pw@127.0.0.1:6379/2"));
        assert!(!format!("{r:?}{c:?}").contains("pw"));
        assert!(
            parse(&["--redis-ca", "ca.pem"]).is_err(),
            "only with --redis"
        );
        let ca = parse(&[
            "--redis",
            "rediss://h:1/0",
            "--redis-ca",
            "/nonexistent/ca.pem",
        ]);
        assert!(matches!(
            Config::from_args(&ca.unwrap()),
            Err(ConfigError::RedisCa { .. })
        ));
    }

    #[test]
    fn turn_flags() {
        let args = parse(&[
            "--turn",
            "turn:127.0.0.1:3478",
            "--turn-secret",
            "s3cret",
            "--turn-ttl",
            "10m",
            "--stun",
            "stun:127.0.0.1:3478",
            "--stun",
            "stun:127.0.0.2:3478",
        ])
        .unwrap();
        let c = Config::from_args(&args).unwrap();
        assert_eq!(c.ice.stun.len(), 2);
        assert!(
            matches!(c.ice.turn_auth, TurnAuth::Secret { ttl, .. } if ttl == Duration::from_secs(600))
        );
        assert!(!format!("{args:?}{c:?}").contains("s3cret"));
        assert!(parse(&["--turn-user", "u"]).is_err());
        // A password on the command line without a user name is a mistake to say (without
        // the variable set, as in the tests, it must have come from the command line).
        let no_user = parse(&["--turn", "turn:127.0.0.2:3478", "--turn-password", "p"]).unwrap();
        assert!(matches!(
            Config::from_args(&no_user),
            Err(ConfigError::TurnPasswordWithoutUser)
        ));
        assert!(
            parse(&[
                "--turn-user",
                "u",
                "--turn-password",
                "p",
                "--turn-secret",
                "s"
            ])
            .is_err()
        );
        let no_url = parse(&["--turn-user", "u", "--turn-password", "p"]).unwrap();
        assert!(matches!(
            Config::from_args(&no_url),
            Err(ConfigError::TurnCredentialsWithoutServer)
        ));
        assert!(parse(&["--tls-cert", "x.pem"]).is_err());
    }

    #[test]
    fn embedded_relay_flags() {
        // Not configured: no relay.
        assert!(
            Config::from_args(&parse(&[]).unwrap())
                .unwrap()
                .relay
                .is_none()
        );
        // The listen address is the relay address by default.
        let c = Config::from_args(&parse(&["--turn-listen", "10.0.0.5:3478"]).unwrap()).unwrap();
        let r = c.relay.expect("relay");
        assert_eq!(r.relay_ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(r.ports, (49152, 65535));
        assert_eq!((r.max_allocations, r.max_allocations_per_user), (200, 64));
        assert_eq!(r.max_rate, 0);
        assert!(r.tcp);
        assert!(!r.allow_private_peers);
        // No --turn-secret: a random one, different each time, never printed.
        assert!(r.secret.len() >= 24);
        let again = Config::from_args(&parse(&["--turn-listen", "10.0.0.5:3478"]).unwrap())
            .unwrap()
            .relay
            .unwrap();
        assert_ne!(r.secret, again.secret);
        assert!(!format!("{again:?}").contains(&again.secret));
        // 0.0.0.0 needs the public address.
        assert!(matches!(
            Config::from_args(&parse(&["--turn-listen", "0.0.0.0:3478"]).unwrap()),
            Err(ConfigError::RelayIpUnspecified(_))
        ));
        let args = parse(&[
            "--turn-listen",
            "0.0.0.0:3478",
            "--turn-relay-ip",
            "203.0.113.7",
            "--turn-ports",
            "49160-49200",
            "--turn-secret",
            "s3cret",
            "--turn-max-allocations",
            "10",
            "--turn-max-per-user",
            "4",
            "--turn-max-rate",
            "1000000",
        ])
        .unwrap();
        // A secret alone (no --turn) is the relay's: not an error.
        let c = Config::from_args(&args).unwrap();
        let r = c.relay.clone().unwrap();
        assert_eq!(r.relay_ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(r.ports, (49160, 49200));
        assert_eq!(r.secret, "s3cret");
        assert_eq!((r.max_allocations, r.max_allocations_per_user), (10, 4));
        assert_eq!(r.max_rate, 1_000_000);
        assert!(matches!(c.ice.turn_auth, TurnAuth::None));
        assert!(!format!("{args:?}{c:?}").contains("s3cret"));
        for bad in ["49200-49160", "0-10", "5000", "a-b"] {
            assert!(parse(&["--turn-ports", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--turn-relay-ip", "1.2.3.4"]).is_err());
        assert!(matches!(
            Config::from_args(
                &parse(&[
                    "--turn-listen",
                    "127.0.0.1:0",
                    "--turn-max-allocations",
                    "0"
                ])
                .unwrap()
            ),
            Err(ConfigError::Zero(_))
        ));
    }

    #[test]
    fn bad_tls_files_are_typed_errors() {
        let err = tls_config_from_files(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::TlsCert { .. }), "{err}");
    }
}
