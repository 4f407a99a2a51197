//! The connectivity lab: network namespaces, veth pairs and nftables NAT routers that model the
//! NATs people have, a "public" namespace with `yakk signal` and coturn, and the real `yakk`
//! binary on both sides.
//!
//! ```text
//!                       pub (10.200.0.1 on lo: yakk signal :6006, coturn :3478;
//!                            yakk signal :6008 with its own TURN relay on :3479)
//!                      /                                                    \
//!        u<k> 10.200.k.1/24                                        u<k'> 10.200.k'.1/24
//!              |                                                            |
//!   router A (wan 10.200.k.2)                                  router B (wan 10.200.k'.2)
//!   lan 192.168.k.1/24 (NAT) or 10.201.k.1/24 (public)         …
//!              |                                                            |
//!   host A 192.168.k.2 / 10.201.k.2: echo server, `yakk server`  host B: `yakk client`, load
//! ```
//!
//! Everything is named with the prefix `ykl<pid>`; nothing is connected to the machine's own
//! network (only veth pairs between namespaces this lab made; the public namespace has no
//! default route). [`Lab`]'s `Drop` kills every process it started and deletes every namespace;
//! [`sweep_leftovers`] removes those of runs that were killed before they could.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_yakk");
pub const PREFIX: &str = "ykl";
/// The servers' address in the public namespace.
pub const PUBLIC_IP: &str = "10.200.0.1";
pub const SIGNAL_PORT: u16 = 6006;
/// A second signalling server that advertises STUN only (no relay).
pub const SIGNAL_NO_TURN_PORT: u16 = 6007;
/// A third one that runs its own TURN relay (`--turn-listen`) instead of pointing at coturn.
pub const SIGNAL_EMBEDDED_PORT: u16 = 6008;
/// The embedded relay's UDP and TCP port, and its relayed ports.
pub const EMBEDDED_TURN_PORT: u16 = 3479;
pub const EMBEDDED_RELAY_PORTS: &str = "41000-41999";
pub const TURN_PORT: u16 = 3478;
/// A fourth signalling server, on 443 with TLS (its certificate is for `PUBLIC_IP`, made by
/// the lab; peers trust it through `SSL_CERT_FILE`), with its own relay: over UDP and TCP on
/// `TLS_SIGNAL_TURN_PORT`, and over TLS on 443 itself.
pub const TLS_SIGNAL_PORT: u16 = 443;
pub const TLS_SIGNAL_TURN_PORT: u16 = 3481;
pub const TLS_SIGNAL_RELAY_PORTS: &str = "42000-42999";
/// Where `yakk signal` answers STUN binding requests itself.
pub const SIGNAL_STUN_PORT: u16 = 3480;
pub const TURN_SECRET: &str = "lab-shared-secret-not-for-production";
/// The shared port inside the owner's namespace, and the joiner's local port.
pub const ECHO_PORT: u16 = 7000;
pub const JOIN_PORT: u16 = 7001;

/// NAT behaviours (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// No NAT: the host has a public address, nothing is filtered.
    Public,
    /// Endpoint-independent mapping and filtering ("full cone"): one public port per local
    /// port, and anyone may send to it.
    Eim,
    /// Endpoint-independent mapping, address-and-port-dependent filtering ("port-restricted
    /// cone"): only replies from where the host already sent get in.
    PortRestricted,
    /// Address-and-port-dependent mapping (a random public port per destination) and
    /// filtering: "symmetric".
    Symmetric,
}

pub const ALL: [Nat; 4] = [Nat::Public, Nat::Eim, Nat::PortRestricted, Nat::Symmetric];

impl Nat {
    pub fn name(self) -> &'static str {
        match self {
            Nat::Public => "public (no NAT)",
            Nat::Eim => "endpoint-independent",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Nat::Public => "public",
            Nat::Eim => "eim",
            Nat::PortRestricted => "prc",
            Nat::Symmetric => "sym",
        }
    }

    /// Whether two peers behind these NATs need a relay: only when neither mapping can be
    /// reached from the other side (both symmetric, or symmetric against port-restricted).
    pub fn needs_relay(a: Nat, b: Nat) -> bool {
        matches!(
            (a, b),
            (Nat::Symmetric, Nat::Symmetric)
                | (Nat::Symmetric, Nat::PortRestricted)
                | (Nat::PortRestricted, Nat::Symmetric)
        )
    }

    /// The router's nftables ruleset; `host` is the host behind it.
    fn ruleset(self, host: &str) -> String {
        // A NAT router drops what arrives unasked on its WAN side. Dropping before the
        // conntrack entry is confirmed matters: an unconfirmed entry leaves no trace, so it
        // cannot steal the port the host's own mapping wants later.
        let firewall = |allow_dnat: bool| {
            format!(
                "table inet ykl_filter {{\n\
                 \tchain input {{ type filter hook input priority 0; policy accept;\n\
                 \t\tiifname \"wan\" ct state new drop\n\t}}\n\
                 \tchain forward {{ type filter hook forward priority 0; policy accept;\n\
                 {}\t\tiifname \"wan\" ct state new drop\n\t}}\n}}\n",
                if allow_dnat {
                    "\t\tiifname \"wan\" ct status dnat accept\n"
                } else {
                    ""
                }
            )
        };
        match self {
            Nat::Public => String::new(),
            Nat::Eim => format!(
                "{}table ip ykl_nat {{\n\
                 \tchain pre {{ type nat hook prerouting priority dstnat; policy accept;\n\
                 \t\tiifname \"wan\" meta l4proto udp dnat to {host}\n\t}}\n\
                 \tchain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 \t\toifname \"wan\" masquerade persistent\n\t}}\n}}\n",
                firewall(true)
            ),
            Nat::PortRestricted => format!(
                "{}table ip ykl_nat {{\n\
                 \tchain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 \t\toifname \"wan\" masquerade persistent\n\t}}\n}}\n",
                firewall(false)
            ),
            Nat::Symmetric => format!(
                "{}table ip ykl_nat {{\n\
                 \tchain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 \t\toifname \"wan\" masquerade fully-random\n\t}}\n}}\n",
                firewall(false)
            ),
        }
    }
}

/// What a side's network lets out, beyond its NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Anything.
    Open,
    /// No UDP at all, and TCP only to the rendezvous's port 443 (a strict corporate or hotel
    /// network): only TURN over TLS on 443 reaches a relay.
    Tcp443Only,
    /// Only the rendezvous's address (UDP and TCP): STUN and TURN over UDP work, nothing
    /// reaches the other peer directly.
    RendezvousOnly,
    /// No UDP at all, any TCP: TURN over TCP and over TLS both reach the relay.
    NoUdp,
}

impl Net {
    pub fn name(self) -> &'static str {
        match self {
            Net::Open => "",
            Net::Tcp443Only => ", only TCP to 443",
            Net::RendezvousOnly => ", only to the rendezvous",
            Net::NoUdp => ", no UDP",
        }
    }

    /// The router's egress filter for it (nftables), on what the host sends out.
    fn ruleset(self) -> String {
        let rules = match self {
            Net::Open => return String::new(),
            Net::Tcp443Only => format!(
                "\t\tiifname \"lan\" meta l4proto udp drop\n\
                 \t\tiifname \"lan\" ip daddr != {PUBLIC_IP} drop\n\
                 \t\tiifname \"lan\" tcp dport != {TLS_SIGNAL_PORT} drop\n"
            ),
            Net::RendezvousOnly => {
                format!("\t\tiifname \"lan\" ip daddr != {PUBLIC_IP} drop\n")
            }
            Net::NoUdp => "\t\tiifname \"lan\" meta l4proto udp drop\n".to_string(),
        };
        format!(
            "table inet ykl_egress {{\n\
             \tchain forward {{ type filter hook forward priority -10; policy accept;\n\
             {rules}\t}}\n}}\n"
        )
    }
}

/// Why the lab cannot run here, if it cannot (then tests skip, loudly).
pub fn unavailable() -> Option<String> {
    // SAFETY-free root check: /proc/self/status says the effective uid.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Some("not running as root (network namespaces need root)".into());
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        return Some("the `ip` command (iproute2) is not installed".into());
    }
    None
}

/// Prints the loud skip message; returns true if the caller should skip.
pub fn skip(test: &str) -> bool {
    match unavailable() {
        None => false,
        // In CI (`.ci/run` sets YAKK_CI) a lab that cannot run is a failure, never a pass.
        Some(why) if std::env::var_os("YAKK_CI").is_some() => {
            panic!("{test} cannot run: {why} (YAKK_CI is set, so this is a failure)")
        }
        Some(why) => {
            let line = "!".repeat(78);
            eprintln!(
                "{line}\n!!! SKIPPED {test}: {why}.\n!!! The NAT lab needs root, iproute2, nftables and coturn \
                 (apt-get install iproute2 nftables coturn).\n{line}"
            );
            true
        }
    }
}

/// Runs a command to completion within `secs`; its stdout, or an error with its stderr.
pub fn run(argv: &[&str], stdin: Option<&str>, secs: u64) -> Result<String, String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("piped");
        w.write_all(input.as_bytes())
            .map_err(|e| format!("{argv:?}: writing stdin: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{argv:?} did not finish within {secs} s"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{argv:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let mut v = vec!["ip"];
    v.extend_from_slice(args);
    run(&v, None, 10).map(drop)
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v, None, 10)
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_ns(ns, &["sh", "-c", &format!("echo {value} > {path}")]).map(drop)
}

/// Kills every process inside `ns` (by pid) and deletes it.
fn destroy_ns(ns: &str) {
    for _ in 0..3 {
        let pids = run(&["ip", "netns", "pids", ns], None, 5).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = run(&["kill", "-KILL", pid], None, 5);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run(&["ip", "netns", "del", ns], None, 10);
}

fn lab_namespaces() -> Vec<String> {
    run(&["ip", "netns", "list"], None, 5)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Deletes the lab namespaces of runs whose process is gone (a killed run cannot clean up).
pub fn sweep_leftovers() {
    for ns in lab_namespaces() {
        let pid: String = ns[PREFIX.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        // Labs of this process run one at a time, so any of ours is a leftover too.
        if !alive || pid == std::process::id().to_string() {
            eprintln!("lab: removing leftover namespace {ns}");
            destroy_ns(&ns);
        }
    }
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// One side of a pairing: a NAT router and a host behind it.
pub struct Side {
    pub nat: Nat,
    pub router: String,
    pub host: String,
    /// The host's address.
    pub host_ip: String,
    /// The router's public (WAN) address.
    pub wan_ip: String,
    uplink: String,
}

/// A running process inside a namespace, with its JSON events (if any) and its stderr.
pub struct Proc {
    pub name: String,
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    /// The next stdout line that is a JSON event named `name`, within `within`.
    pub async fn event(&mut self, name: &str, within: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if v["event"] == name {
                        return Ok(v);
                    }
                    if v["event"] == "error" && name != "error" {
                        return Err(format!(
                            "{}: error event {v}; stderr (last lines):\n{}",
                            self.name,
                            self.stderr_tail(40)
                        ));
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "{} exited before event {name:?}; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{}: no event {name:?} within {within:?}; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
            }
        }
    }

    /// The rest of the next stdout line containing `prefix`, within `within`.
    pub async fn line(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    // libtest may print "test name ... " on the same line first.
                    if let Some(at) = line.find(prefix) {
                        return Ok(line[at + prefix.len()..].to_string());
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "{} exited before printing {prefix:?}; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{}: nothing starting with {prefix:?} within {within:?}; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
            }
        }
    }

    pub async fn exit_code(&mut self, within: Duration) -> Result<i32, String> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(st)) => Ok(st.code().unwrap_or(-1)),
            _ => Err(format!("{} did not exit within {within:?}", self.name)),
        }
    }

    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr_text();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A lab: the public namespace (servers) and the sides of the current pairing.
pub struct Lab {
    pub id: String,
    pub public: String,
    tmp: PathBuf,
    servers: Vec<Proc>,
    sides: Vec<Side>,
    next_net: u32,
}

impl Lab {
    /// Creates the public namespace and starts coturn and the signalling servers in it.
    pub async fn new() -> Result<Lab, String> {
        sweep_leftovers();
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{PREFIX}{}_{seq}", std::process::id());
        let tmp = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut lab = Lab {
            public: format!("{id}p"),
            id,
            tmp,
            servers: Vec::new(),
            sides: Vec::new(),
            next_net: 1,
        };
        lab.setup_public()?;
        lab.start_servers().await?;
        Ok(lab)
    }

    fn new_ns(&self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // IPv4 only: the lab's addressing is all IPv4, and no IPv6 may wander anywhere.
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(())
    }

    fn setup_public(&mut self) -> Result<(), String> {
        let p = self.public.clone();
        self.new_ns(&p)?;
        ip(&[
            "-n",
            &p,
            "addr",
            "add",
            &format!("{PUBLIC_IP}/32"),
            "dev",
            "lo",
        ])?;
        sysctl(&p, "net.ipv4.ip_forward", "1")?;
        // Like the Internet, the public side has a way out for any address, where packets to
        // private addresses silently vanish. Without one, sending to a peer's private (host)
        // candidate fails at once with "network unreachable", and coturn tears down the whole
        // allocation on that error: every relayed pairing then failed.
        // (A veth whose other end stays down: it takes everything and drops it, no error.)
        ip(&[
            "-n", &p, "link", "add", "void", "type", "veth", "peer", "name", "void-end",
        ])?;
        ip(&["-n", &p, "link", "set", "void", "up"])?;
        ip(&["-n", &p, "route", "add", "default", "dev", "void"])?;
        Ok(())
    }

    async fn start_servers(&mut self) -> Result<(), String> {
        let p = self.public.clone();
        let db = self.tmp.join("turndb");
        let turn_args: Vec<String> = vec![
            "turnserver".into(),
            "-n".into(),
            format!("--listening-ip={PUBLIC_IP}"),
            format!("--relay-ip={PUBLIC_IP}"),
            format!("--listening-port={TURN_PORT}"),
            "--use-auth-secret".into(),
            format!("--static-auth-secret={TURN_SECRET}"),
            "--realm=yakk.lab".into(),
            "--fingerprint".into(),
            "--no-tls".into(),
            "--no-dtls".into(),
            "--no-tcp".into(),
            "--no-cli".into(),
            "--no-rfc5780".into(),
            "--min-port=40000".into(),
            "--max-port=40999".into(),
            format!("--userdb={}", db.display()),
            format!("--pidfile={}", self.tmp.join("turnserver.pid").display()),
            format!("--log-file={}", self.tmp.join("turn.log").display()),
            "--simple-log".into(),
            "--no-stdout-log".into(),
        ];
        let mut turn_args = turn_args;
        if debug_logs() {
            // Every Allocate, CreatePermission and ChannelBind, and per-session peer usage.
            turn_args.push("--verbose".into());
        }
        let turn_args: Vec<&str> = turn_args.iter().map(String::as_str).collect();
        let turn = spawn_in(&p, "coturn", &turn_args, &[])?;
        self.servers.push(turn);
        let stun_url = format!("stun:{PUBLIC_IP}:{SIGNAL_STUN_PORT}");
        let turn_url = format!("turn:{PUBLIC_IP}:{TURN_PORT}?transport=udp");
        let listen = format!("{PUBLIC_IP}:{SIGNAL_PORT}");
        let stun_listen = format!("{PUBLIC_IP}:{SIGNAL_STUN_PORT}");
        let signal = spawn_in(
            &p,
            "signal",
            &[
                BIN,
                "signal",
                "--listen",
                &listen,
                "--stun-listen",
                &stun_listen,
                "--stun",
                &stun_url,
                "--turn",
                &turn_url,
                "--turn-secret",
                TURN_SECRET,
                "--turn-ttl",
                "10m",
            ],
            &[],
        )?;
        self.servers.push(signal);
        let listen2 = format!("{PUBLIC_IP}:{SIGNAL_NO_TURN_PORT}");
        let signal2 = spawn_in(
            &p,
            "signal-no-turn",
            &[BIN, "signal", "--listen", &listen2, "--stun", &stun_url],
            &[],
        )?;
        self.servers.push(signal2);
        let listen3 = format!("{PUBLIC_IP}:{SIGNAL_EMBEDDED_PORT}");
        let turn_listen = format!("{PUBLIC_IP}:{EMBEDDED_TURN_PORT}");
        // No --turn-secret: the relay makes up its own, as `yakk signal --turn-listen` alone does.
        let signal3 = spawn_in(
            &p,
            "signal-embedded-turn",
            &[
                BIN,
                "signal",
                "--listen",
                &listen3,
                "--stun",
                &stun_url,
                "--turn-listen",
                &turn_listen,
                "--turn-ports",
                EMBEDDED_RELAY_PORTS,
                // The lab's "public" addresses are 10.200.0.0/16.
                "--turn-allow-private-peers",
            ],
            &[],
        )?;
        self.servers.push(signal3);
        let (cert, key) = self.certificate()?;
        let listen4 = format!("{PUBLIC_IP}:{TLS_SIGNAL_PORT}");
        let turn_listen4 = format!("{PUBLIC_IP}:{TLS_SIGNAL_TURN_PORT}");
        let signal4 = spawn_in(
            &p,
            "signal-tls",
            &[
                BIN,
                "signal",
                "--listen",
                &listen4,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--stun",
                &stun_url,
                "--turn-listen",
                &turn_listen4,
                "--turn-ports",
                TLS_SIGNAL_RELAY_PORTS,
                "--turn-allow-private-peers",
            ],
            &[],
        )?;
        self.servers.push(signal4);
        // Wait until every port is bound (bounded).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let udp = in_ns(&p, &["ss", "-Hlun"]).unwrap_or_default();
            let tcp = in_ns(&p, &["ss", "-Hltn"]).unwrap_or_default();
            let ready = udp.contains(&format!("{PUBLIC_IP}:{TURN_PORT}"))
                && udp.contains(&format!("{PUBLIC_IP}:{SIGNAL_STUN_PORT}"))
                && udp.contains(&turn_listen)
                && tcp.contains(&turn_listen)
                && tcp.contains(&listen)
                && tcp.contains(&listen2)
                && tcp.contains(&listen3)
                && tcp.contains(&listen4)
                && udp.contains(&turn_listen4);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .servers
                    .iter()
                    .map(|s| format!("--- {}:\n{}", s.name, s.stderr_text()))
                    .collect();
                return Err(format!(
                    "the servers did not start within 15 s (udp: {udp}, tcp: {tcp})\n{}",
                    logs.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tears down the sides of the previous pairing and builds two new ones.
    pub fn pairing(&mut self, a: Nat, b: Nat) -> Result<(), String> {
        self.pairing_with(a, b, Net::Open)
    }

    /// The same, the second side's network letting out only what `b_net` allows.
    pub fn pairing_with(&mut self, a: Nat, b: Nat, b_net: Net) -> Result<(), String> {
        self.clear_sides();
        for (nat, net) in [(a, Net::Open), (b, b_net)] {
            let side = self.build_side(nat, net)?;
            self.sides.push(side);
        }
        Ok(())
    }

    pub fn side(&self, i: usize) -> &Side {
        &self.sides[i]
    }

    fn build_side(&mut self, nat: Nat, net: Net) -> Result<Side, String> {
        let k = self.next_net;
        self.next_net += 1;
        if k > 250 {
            return Err("out of lab subnets".into());
        }
        let router = format!("{}r{k}", self.id);
        let host = format!("{}h{k}", self.id);
        let uplink = format!("u{k}");
        let p = &self.public;
        self.new_ns(&router)?;
        self.new_ns(&host)?;
        let side = Side {
            nat,
            host_ip: match nat {
                Nat::Public => format!("10.201.{k}.2"),
                _ => format!("192.168.{k}.2"),
            },
            wan_ip: format!("10.200.{k}.2"),
            router,
            host,
            uplink,
        };
        let (r, h) = (&side.router, &side.host);
        ip(&[
            "-n",
            p,
            "link",
            "add",
            &side.uplink,
            "type",
            "veth",
            "peer",
            "name",
            "wan",
            "netns",
            r,
        ])?;
        ip(&[
            "-n",
            p,
            "addr",
            "add",
            &format!("10.200.{k}.1/24"),
            "dev",
            &side.uplink,
        ])?;
        ip(&["-n", p, "link", "set", &side.uplink, "up"])?;
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &format!("{}/24", side.wan_ip),
            "dev",
            "wan",
        ])?;
        ip(&["-n", r, "link", "set", "wan", "up"])?;
        ip(&[
            "-n",
            r,
            "route",
            "add",
            "default",
            "via",
            &format!("10.200.{k}.1"),
        ])?;
        ip(&[
            "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", h,
        ])?;
        let lan_net = match nat {
            Nat::Public => format!("10.201.{k}"),
            _ => format!("192.168.{k}"),
        };
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &format!("{lan_net}.1/24"),
            "dev",
            "lan",
        ])?;
        ip(&["-n", r, "link", "set", "lan", "up"])?;
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", side.host_ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", h, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            h,
            "route",
            "add",
            "default",
            "via",
            &format!("{lan_net}.1"),
        ])?;
        sysctl(r, "net.ipv4.ip_forward", "1")?;
        if nat == Nat::Public {
            ip(&[
                "-n",
                p,
                "route",
                "add",
                &format!("{lan_net}.0/24"),
                "via",
                &side.wan_ip,
            ])?;
        }
        let rules = nat.ruleset(&side.host_ip) + &net.ruleset();
        if !rules.is_empty() {
            run(
                &["ip", "netns", "exec", r, "nft", "-f", "-"],
                Some(&rules),
                10,
            )
            .map_err(|e| format!("nftables in {r}: {e}\n{rules}"))?;
        }
        Ok(side)
    }

    fn clear_sides(&mut self) {
        for side in self.sides.drain(..) {
            let _ = ip(&["-n", &self.public, "link", "del", &side.uplink]);
            destroy_ns(&side.host);
            destroy_ns(&side.router);
        }
    }

    /// Starts a process in the host namespace of side `i`.
    pub fn spawn(
        &self,
        i: usize,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        spawn_in(&self.sides[i].host, name, argv, env)
    }

    /// The signalling server's URL (with or without a TURN relay advertised).
    pub fn signal_url(&self, with_turn: bool) -> String {
        let port = if with_turn {
            SIGNAL_PORT
        } else {
            SIGNAL_NO_TURN_PORT
        };
        format!("ws://{PUBLIC_IP}:{port}")
    }

    /// A certificate for `PUBLIC_IP` (self-signed: its own authority) in the lab's directory:
    /// the paths of its PEM certificate (what `SSL_CERT_FILE` names) and key.
    fn certificate(&self) -> Result<(String, String), String> {
        let ck = rcgen::generate_simple_self_signed(vec![PUBLIC_IP.to_string()])
            .map_err(|e| format!("certificate: {e}"))?;
        let cert = self.tmp.join("cert.pem");
        let key = self.tmp.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
        std::fs::write(&key, ck.signing_key.serialize_pem())
            .map_err(|e| format!("{}: {e}", key.display()))?;
        Ok((
            cert.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        ))
    }

    /// The certificate of the TLS signalling server, for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> String {
        self.tmp.join("cert.pem").to_string_lossy().into_owned()
    }

    /// The URL of the signalling server on 443 with TLS and its own relay (also over TLS).
    pub fn signal_url_tls(&self) -> String {
        format!("wss://{PUBLIC_IP}:{TLS_SIGNAL_PORT}")
    }

    /// The URL of the signalling server whose relay is its own (`--turn-listen`).
    pub fn signal_url_embedded(&self) -> String {
        format!("ws://{PUBLIC_IP}:{SIGNAL_EMBEDDED_PORT}")
    }

    /// `/metrics` of the signalling server with the embedded relay (read from inside the public
    /// namespace with bash's /dev/tcp: no HTTP client needed).
    pub fn embedded_metrics(&self) -> Result<String, String> {
        let script = format!(
            "exec 3<>/dev/tcp/{PUBLIC_IP}/{SIGNAL_EMBEDDED_PORT} && \
             printf 'GET /metrics HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n' >&3 && cat <&3"
        );
        in_ns(&self.public, &["bash", "-c", &script])
    }

    /// What the signalling server with the embedded relay said on stderr so far.
    pub fn embedded_log(&self) -> String {
        self.servers
            .iter()
            .find(|s| s.name.starts_with("signal-embedded-turn"))
            .map(Proc::stderr_text)
            .unwrap_or_default()
    }

    /// What the server named `name` (its name's start) said on stderr so far.
    pub fn server_log(&self, name: &str) -> String {
        self.servers
            .iter()
            .find(|s| s.name.starts_with(name))
            .map(Proc::stderr_text)
            .unwrap_or_default()
    }

    /// What coturn logged so far.
    pub fn turn_log(&self) -> String {
        std::fs::read_to_string(self.tmp.join("turn.log")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        self.servers.clear();
        self.clear_sides();
        destroy_ns(&self.public);
        if debug_logs() {
            let kept = std::env::temp_dir().join(format!("{}-turn.log", self.id));
            if std::fs::copy(self.tmp.join("turn.log"), &kept).is_ok() {
                eprintln!("lab: coturn's log kept at {}", kept.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// `YKL_DEBUG` set: coturn logs verbosely and its log outlives the lab.
fn debug_logs() -> bool {
    std::env::var_os("YKL_DEBUG").is_some()
}

/// Starts `argv` inside namespace `ns`: stdout lines are collected (for events), stderr kept.
pub fn spawn_in(ns: &str, name: &str, argv: &[&str], env: &[(&str, &str)]) -> Result<Proc, String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(argv)
        .env_remove("YAKK_SIGNAL")
        .env_remove("YAKK_PASSWORD")
        .env_remove("YAKK_CODE")
        .env_remove("YAKK_TURN_SECRET")
        .env_remove("YAKK_TURN_PASSWORD")
        .env_remove("YAKK_ICE_IPS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name} in {ns}: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("piped");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let b2 = buf.clone();
    let stderr = child.stderr.take().expect("piped");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut b) = b2.lock() {
                // Bounded: keep the first 256 KiB.
                if b.len() < 256 * 1024 {
                    b.push_str(&line);
                    b.push('\n');
                }
            }
        }
    });
    Ok(Proc {
        name: format!("{name} ({ns})"),
        child,
        lines: rx,
        stderr: buf,
    })
}
