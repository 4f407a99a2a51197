//! The connectivity lab (issue 8): yakk across the NAT types people have, built from network
//! namespaces, veth pairs and nftables NAT routers, with the real `yakk signal` and coturn in a
//! "public" namespace. See `tests/lab/mod.rs` for the topology and `lab/README.md` for the
//! report.
//!
//! Needs root and iproute2, nftables, coturn (CI has them). Without root or `ip`, every test
//! here prints a loud SKIPPED message and passes, unless `YAKK_CI` is set (`.ci/run` sets it):
//! then it fails.
//!
//! `lab/run-report` runs the ignored `report` test, which writes `lab/REPORT.md`.
//! `YKL_ONLY=eim-eim` runs one pairing; `YKL_RUST_LOG=info,rtc_ice=trace` sets the peers' log
//! level, and `YKL_DUMP=DIR` writes their logs to `DIR/owner.log` and `DIR/joiner.log`.

mod lab;

use std::time::{Duration, Instant};

use lab::{ALL, ECHO_PORT, JOIN_PORT, Lab, Nat, Net};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes carried through the tunnel in each pairing (each way, through an echo).
const BULK: usize = 64 << 20;
/// The same through the TURN relay, where a debug build gets 1.5–5 MiB/s: enough to show
/// the data arrives intact, within the test's time.
const RELAYED_BULK: usize = 16 << 20;
/// Through the embedded relay: the full bulk (issue 21 asks for 64 MiB intact).
const EMBEDDED_BULK: usize = 64 << 20;

/// Which TURN relay the signalling server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayServer {
    /// coturn, with credentials from `yakk signal --turn-secret`.
    Coturn,
    /// `yakk signal --turn-listen`: the relay inside the signalling server.
    Embedded,
    /// The same on 443 with TLS (wss), whose relay is also served over TLS on 443.
    Tls443,
}

/// How a pairing is run, beyond the NATs of its sides.
#[derive(Debug, Clone, Copy)]
struct Extra {
    /// The relay the signalling server advertises.
    relay: RelayServer,
    /// Bytes each way instead of the default for the pairing (`bulk`).
    bytes: Option<usize>,
    /// Lanes the joiner asks for; both sides must report them all up.
    lanes: u32,
    /// `--relay-only` on the owner's side.
    owner_relay_only: bool,
    /// `--relay-only` on the joiner's side.
    joiner_relay_only: bool,
    /// What the joiner's network lets out.
    joiner_net: Net,
}

impl Extra {
    fn lanes(lanes: u32) -> Extra {
        Extra {
            relay: RelayServer::Coturn,
            bytes: None,
            lanes,
            owner_relay_only: false,
            joiner_relay_only: false,
            joiner_net: Net::Open,
        }
    }

    fn embedded(self) -> Extra {
        Extra {
            relay: RelayServer::Embedded,
            ..self
        }
    }

    /// A side can only be relayed: `--relay-only`, or a network that reaches nothing else.
    fn forced(self) -> bool {
        self.owner_relay_only || self.joiner_relay_only || self.joiner_net != Net::Open
    }

    /// The joiner's own candidate of the pair must be a relay one: `--relay-only`, or a network
    /// that sends no UDP at all. (A network that reaches the rendezvous only still reaches the
    /// relay there: the peer's relay candidate with the joiner's own server-reflexive one is a
    /// relayed pair too.)
    fn joiner_forced(self) -> bool {
        self.joiner_relay_only || matches!(self.joiner_net, Net::Tcp443Only | Net::NoUdp)
    }

    /// How the joiner must reach its relay when it is forced to one.
    fn joiner_leg(self) -> &'static str {
        match self.joiner_net {
            Net::Tcp443Only => "tls",
            // Both reach the relay; ICE takes whichever allocation's checks succeed first.
            Net::NoUdp => "tcp or tls",
            _ => "udp",
        }
    }
}

/// Whether a pairing must go through the relay: the NATs leave no direct path, or a side
/// allows only relayed ones.
fn relayed(a: Nat, b: Nat, extra: Extra) -> bool {
    Nat::needs_relay(a, b) || extra.forced()
}

/// Bytes each way for a pairing.
fn bulk(a: Nat, b: Nat, extra: Extra) -> usize {
    if let Some(n) = extra.bytes {
        n
    } else if relayed(a, b, extra) {
        RELAYED_BULK
    } else {
        BULK
    }
}

/// Labs share names, ports and the CPU: one at a time (an async lock: it is held across awaits,
/// and each test has its own runtime).
static ONE_LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What one pairing gave.
#[derive(Debug, Clone)]
struct Outcome {
    owner_nat: Nat,
    joiner_nat: Nat,
    owner_path: String,
    joiner_path: String,
    /// The `relay` field of each side's `connected` event (`udp`/`tcp`/`tls`, or null).
    owner_relay: Value,
    joiner_relay: Value,
    extra: Extra,
    rtt_ms: Option<f64>,
    setup: Duration,
    mib_per_s: f64,
}

impl Outcome {
    /// Both sides must agree: a pair is relayed if either end is a relay candidate.
    fn relayed(&self) -> Option<bool> {
        let (o, j) = (self.owner_path == "relay", self.joiner_path == "relay");
        (o == j).then_some(o)
    }
}

fn rtt(ev: &Value) -> Option<f64> {
    ev["rtt_ms"].as_f64()
}

/// The test binary itself, run inside a namespace as a helper (see `lab_helper`).
fn helper_argv() -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    vec![
        exe.display().to_string(),
        "--exact".into(),
        "lab_helper".into(),
        "--ignored".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// One pairing: owner behind `a` shares an echo server, joiner behind `b` connects, then an
/// echo and a `BULK` transfer go through the tunnel. With `extra.lanes` above 1 the joiner
/// asks for that many lanes, and both sides must report them all up.
async fn run_pairing(lab: &mut Lab, a: Nat, b: Nat, extra: Extra) -> Result<Outcome, String> {
    let lanes = extra.lanes;
    let relay_only = |on: bool| if on { vec!["--relay-only"] } else { vec![] };
    lab.pairing_with(a, b, extra.joiner_net)?;
    let argv = helper_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let echo_addr = format!("127.0.0.1:{ECHO_PORT}");
    let mut echo = lab.spawn(
        0,
        "echo",
        &argv,
        &[("YKL_HELPER", "echo"), ("YKL_ADDR", echo_addr.as_str())],
    )?;
    echo.line("YKL-READY", Duration::from_secs(10)).await?;
    let signal = match extra.relay {
        RelayServer::Coturn => lab.signal_url(true),
        RelayServer::Embedded => lab.signal_url_embedded(),
        RelayServer::Tls443 => lab.signal_url_tls(),
    };
    let port = ECHO_PORT.to_string();
    let log = std::env::var("YKL_RUST_LOG").unwrap_or_else(|_| "info".into());
    let ca_file = lab.ca_file();
    let mut env = vec![("RUST_LOG", log.as_str())];
    if extra.relay == RelayServer::Tls443 {
        // The lab's TLS server has a certificate of its own making.
        env.push(("SSL_CERT_FILE", ca_file.as_str()));
    }
    // The owner wishes for one lane, so the joiner's wish decides. On auto, a round trip to
    // the signalling server of 20 ms or more (a loaded machine) would have it wish for 32.
    let mut owner_argv = vec![
        lab::BIN,
        "server",
        "-p",
        &port,
        "--json",
        "-v",
        "--signal",
        &signal,
        "--lanes",
        "1",
    ];
    owner_argv.extend(relay_only(extra.owner_relay_only));
    let mut owner = lab.spawn(0, "owner", &owner_argv, &env)?;
    let code = owner.event("code", Duration::from_secs(15)).await?;
    let code = code["code"].as_str().ok_or("code event without a code")?;
    let jport = JOIN_PORT.to_string();
    let lanes_arg = lanes.to_string();
    let started = Instant::now();
    let mut joiner_argv = vec![
        lab::BIN,
        "client",
        "-p",
        &jport,
        "--json",
        "-v",
        "--signal",
        &signal,
        "--lanes",
        &lanes_arg,
    ];
    joiner_argv.extend(relay_only(extra.joiner_relay_only));
    joiner_argv.push(code);
    let mut joiner = lab.spawn(1, "joiner", &joiner_argv, &env)?;
    let jev = joiner.event("connected", Duration::from_secs(40)).await?;
    let setup = started.elapsed();
    let oev = owner.event("connected", Duration::from_secs(10)).await?;
    for ev in [&jev, &oev] {
        if ev["lanes"].as_u64() != Some(u64::from(lanes)) {
            return Err(format!("{lanes} lanes asked for, connected with: {ev}"));
        }
    }
    joiner.event("listening", Duration::from_secs(5)).await?;
    for (who, p) in [("joiner", &joiner), ("owner", &owner)] {
        // stderr is read by its own task: give it a moment to catch up with stdout.
        let mut log = p.stderr_text();
        for _ in 0..40 {
            if log.contains("connected over") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            log = p.stderr_text();
        }
        if !log.contains("connected over") || !log.contains("path") {
            return Err(format!("{who}'s -v output does not say the path:\n{log}"));
        }
    }
    let join_addr = format!("127.0.0.1:{JOIN_PORT}");
    let bytes = bulk(a, b, extra).to_string();
    let secs = load_secs(bulk(a, b, extra));
    let secs_arg = secs.to_string();
    let mut load = lab.spawn(
        1,
        "load",
        &argv,
        &[
            ("YKL_HELPER", "load"),
            ("YKL_ADDR", join_addr.as_str()),
            ("YKL_BYTES", bytes.as_str()),
            ("YKL_SECS", secs_arg.as_str()),
        ],
    )?;
    let result = load
        .line("YKL-RESULT ", Duration::from_secs(secs + 10))
        .await?;
    let result: Value = serde_json::from_str(&result).map_err(|e| format!("{e}: {result}"))?;
    if result["ok"] != true {
        return Err(format!("transfer failed: {result}"));
    }
    let secs = result["bulk_secs"].as_f64().unwrap_or(f64::NAN);
    let out = Outcome {
        owner_nat: a,
        joiner_nat: b,
        owner_path: oev["path"].as_str().unwrap_or("?").to_string(),
        joiner_path: jev["path"].as_str().unwrap_or("?").to_string(),
        owner_relay: relay_field(&oev)?,
        joiner_relay: relay_field(&jev)?,
        extra,
        rtt_ms: rtt(&jev).or_else(|| rtt(&oev)),
        setup,
        mib_per_s: (bulk(a, b, extra) as f64 / (1 << 20) as f64) / secs,
    };
    if let Ok(dir) = std::env::var("YKL_DUMP") {
        let _ = std::fs::write(format!("{dir}/owner.log"), owner.stderr_text());
        let _ = std::fs::write(format!("{dir}/joiner.log"), joiner.stderr_text());
    }
    owner.kill();
    joiner.kill();
    echo.kill();
    Ok(out)
}

/// The `relay` field of a `connected` event: present, and a string or null.
fn relay_field(ev: &Value) -> Result<Value, String> {
    match ev.get("relay") {
        Some(v @ (Value::Null | Value::String(_))) => Ok(v.clone()),
        _ => Err(format!("connected event without a relay field: {ev}")),
    }
}

fn expected(a: Nat, b: Nat, extra: Extra) -> &'static str {
    if relayed(a, b, extra) {
        "relay"
    } else {
        "direct"
    }
}

/// How long the load helper may take for `bytes` each way: 80 s, or more for a large bulk
/// through a relay (at least 0.5 MiB/s each way: relayed paths run at 1–8 MiB/s in the lab).
fn load_secs(bytes: usize) -> u64 {
    80u64.max((bytes >> 20) as u64 * 2 + 10)
}

/// The table's "expected" cell: the path, and for a relayed one, which relay.
fn expected_cell(a: Nat, b: Nat, extra: Extra) -> String {
    match (relayed(a, b, extra), extra.relay) {
        (false, _) => "direct".into(),
        (true, RelayServer::Coturn) => "relay (coturn)".into(),
        (true, RelayServer::Embedded) => "relay (embedded)".into(),
        (true, RelayServer::Tls443) => format!("relay (embedded, {})", extra.joiner_leg()),
    }
}

/// What is wrong with a side's `relay` field, if anything: it names the TURN transport (`leg`)
/// exactly when the side's own candidate is a relay, which it always is when the side is
/// `forced` (`--relay-only`, or a network that reaches nothing but the rendezvous); a side that
/// is not relayed says null.
fn relay_problem(path: &str, relay: &Value, forced: bool, leg: &str) -> Option<String> {
    let ok = match (path, forced) {
        ("relay", true) => leg.split(" or ").any(|l| relay == l),
        // Its own candidate, or only the peer's, may be the relay one.
        ("relay", false) => relay == "udp" || relay.is_null(),
        _ => relay.is_null(),
    };
    (!ok).then(|| {
        format!(
            "path {path}{} but relay {relay}",
            if forced {
                format!(" (forced, over {leg})")
            } else {
                String::new()
            }
        )
    })
}

/// One row per pairing: what it gave, or why it did not connect.
type Row = Result<Outcome, (Nat, Nat, Extra, String)>;

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| owner's NAT | joiner's NAT | path (owner / joiner) | expected | RTT | setup | throughput (each way) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &match r {
            Ok(o) => format!(
                "| {} | {}{} | {} / {} | {} | {} | {:.2} s | {:.1} MiB/s |\n",
                o.owner_nat.name(),
                o.joiner_nat.name(),
                o.extra.joiner_net.name(),
                o.owner_path,
                o.joiner_path,
                expected_cell(o.owner_nat, o.joiner_nat, o.extra),
                o.rtt_ms
                    .map(|r| format!("{r:.1} ms"))
                    .unwrap_or_else(|| "–".into()),
                o.setup.as_secs_f64(),
                o.mib_per_s,
            ),
            Err((a, b, extra, e)) => format!(
                "| {} | {}{} | **no connection** ({}) | {} | – | – | – |\n",
                a.name(),
                b.name(),
                extra.joiner_net.name(),
                if e.contains("\"exit_code\":7") {
                    "exit 7: no path found".to_string()
                } else {
                    e.lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect::<String>()
                        .replace('|', "/")
                },
                expected_cell(*a, *b, *extra),
            ),
        };
    }
    s
}

fn write_report(rows: &[Row]) {
    let Ok(path) = std::env::var("YKL_REPORT") else {
        return;
    };
    let mut s = String::from(
        "# yakk connectivity lab\n\n\
         Generated by `lab/run-report` (the `report` test of `crates/yakk/tests/nat_lab.rs`): \
         network namespaces, nftables NAT routers, `yakk signal` (which also answers STUN) and \
         coturn (TURN REST credentials from `yakk signal --turn-secret`) in a \"public\" \
         namespace, with a second `yakk signal` running its own relay (`--turn-listen`, \
         the \"relay (embedded)\" row) and a third on 443 with TLS whose relay is also served \
         over TLS on 443 (the last two rows, where the joiner's network lets out only TCP to \
         443, or only traffic to the rendezvous), the real `yakk` binary on both sides. Each \
         pairing carries an echo and a 64 MiB echo (64 MiB each way at once, checked by \
         SHA-256; 16 MiB through coturn). Setup is from starting the \
         joiner to its `connected` event (signalling, J-PAKE, ICE, DTLS, SCTP). Path is the local \
         candidate type of the pair each side selected; \"direct\" means host, srflx or prflx \
         (a pair from a NATed host candidate through its NAT reports \"host\").\n\n",
    );
    s += "<!-- lab-table:start -->\n";
    s += &table(rows);
    s += "<!-- lab-table:end -->\n";
    if let Err(e) = std::fs::write(&path, s) {
        eprintln!("cannot write the report to {path}: {e}");
    }
}

/// Runs `pairings` in one lab; a row each, and the failures (no connection or wrong path).
async fn run_pairings(pairings: &[(Nat, Nat, Extra)], budget: Duration) -> (Vec<Row>, Vec<String>) {
    let work = async {
        let mut lab = Lab::new().await?;
        let r = run_in(&mut lab, pairings).await;
        drop(lab);
        Ok::<_, String>(r)
    };
    match tokio::time::timeout(budget, work).await {
        Err(_) => panic!("the lab did not finish within {budget:?}"),
        Ok(Err(e)) => panic!("lab setup failed: {e}"),
        Ok(Ok(r)) => r,
    }
}

/// Runs `pairings` in `lab`: a row each, and the failures.
async fn run_in(lab: &mut Lab, pairings: &[(Nat, Nat, Extra)]) -> (Vec<Row>, Vec<String>) {
    {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for &(a, b, extra) in pairings {
            // YKL_ONLY=sym-sym (short names) runs one pairing, for debugging.
            if let Ok(only) = std::env::var("YKL_ONLY")
                && only != format!("{}-{}", a.short(), b.short())
            {
                continue;
            }
            let t = Instant::now();
            match run_pairing(lab, a, b, extra).await {
                Ok(o) => {
                    eprintln!(
                        "lab: {} ↔ {}{}{}{}: {} / {} (relay {} / {}) in {:.2} s, rtt {:?} ms, {:.1} MiB/s (pairing took {:.1} s)",
                        a.name(),
                        b.name(),
                        extra.joiner_net.name(),
                        match extra.relay {
                            RelayServer::Coturn => "",
                            RelayServer::Embedded => " (embedded relay)",
                            RelayServer::Tls443 => " (embedded relay, signalling on 443)",
                        },
                        match (extra.owner_relay_only, extra.joiner_relay_only) {
                            (false, false) => "",
                            (true, false) => " (owner --relay-only)",
                            (false, true) => " (joiner --relay-only)",
                            (true, true) => " (both --relay-only)",
                        },
                        o.owner_path,
                        o.joiner_path,
                        o.owner_relay,
                        o.joiner_relay,
                        o.setup.as_secs_f64(),
                        o.rtt_ms,
                        o.mib_per_s,
                        t.elapsed().as_secs_f64()
                    );
                    if o.rtt_ms.is_none() {
                        failures.push(format!("{} ↔ {}: no RTT reported", a.name(), b.name()));
                    }
                    if o.relayed() != Some(relayed(a, b, extra)) {
                        failures.push(format!(
                            "{} ↔ {}: path {} / {}, expected {}",
                            a.name(),
                            b.name(),
                            o.owner_path,
                            o.joiner_path,
                            expected(a, b, extra)
                        ));
                    }
                    for (who, path, relay, forced, leg) in [
                        (
                            "owner",
                            &o.owner_path,
                            &o.owner_relay,
                            extra.owner_relay_only,
                            "udp",
                        ),
                        (
                            "joiner",
                            &o.joiner_path,
                            &o.joiner_relay,
                            extra.joiner_forced(),
                            extra.joiner_leg(),
                        ),
                    ] {
                        if let Some(p) = relay_problem(path, relay, forced, leg) {
                            failures.push(format!("{} ↔ {}: {who}: {p}", a.name(), b.name()));
                        }
                    }
                    rows.push(Ok(o));
                }
                Err(e) => {
                    eprintln!("lab: {} ↔ {} FAILED: {e}", a.name(), b.name());
                    if std::env::var_os("YKL_DEBUG").is_some() {
                        match extra.relay {
                            RelayServer::Coturn => eprintln!("coturn log:\n{}", lab.turn_log()),
                            RelayServer::Embedded => eprintln!(
                                "embedded relay's signalling server log:\n{}",
                                lab.embedded_log()
                            ),
                            RelayServer::Tls443 => eprintln!(
                                "the TLS signalling server's log:\n{}",
                                lab.server_log("signal-tls")
                            ),
                        }
                    }
                    failures.push(format!("{} ↔ {}: {e}", a.name(), b.name()));
                    rows.push(Err((a, b, extra, e)));
                }
            }
        }
        (rows, failures)
    }
}

fn pairings(relay: Option<bool>) -> Vec<(Nat, Nat, Extra)> {
    let mut v = Vec::new();
    for (i, &a) in ALL.iter().enumerate() {
        for &b in &ALL[i..] {
            if relay.is_none_or(|r| r == Nat::needs_relay(a, b)) {
                v.push((a, b, Extra::lanes(1)));
            }
        }
    }
    v
}

/// Every pairing where one NAT lets the other side in connects directly (never through the
/// relay, though one is configured) and carries an echo and 64 MiB intact.
#[tokio::test(flavor = "multi_thread")]
async fn direct_pairings_connect_without_the_relay() {
    if lab::skip("direct_pairings_connect_without_the_relay") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let (rows, failures) = run_pairings(&pairings(Some(false)), Duration::from_secs(180)).await;
    eprintln!("{}", table(&rows));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Both symmetric, or symmetric against port-restricted: only the TURN relay (coturn, with
/// time-limited credentials from `yakk signal --turn-secret`) connects them, and carries an
/// echo and 16 MiB intact.
#[tokio::test(flavor = "multi_thread")]
async fn relay_pairings_connect_through_turn() {
    if lab::skip("relay_pairings_connect_through_turn") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let (rows, failures) = run_pairings(&pairings(Some(true)), Duration::from_secs(180)).await;
    eprintln!("{}", table(&rows));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Lanes through the relay: both symmetric, the joiner asks for 4 lanes, so each side holds 4
/// TURN allocations on coturn, and the echo and 16 MiB, striped over them, arrive intact.
#[tokio::test(flavor = "multi_thread")]
async fn lanes_stripe_through_turn() {
    if lab::skip("lanes_stripe_through_turn") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let pair = [(Nat::Symmetric, Nat::Symmetric, Extra::lanes(4))];
    let (rows, failures) = run_pairings(&pair, Duration::from_secs(120)).await;
    eprintln!("{}", table(&rows));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The value of the metric line starting with `prefix` in a `/metrics` page.
fn metric(page: &str, prefix: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Both symmetric, through the relay inside `yakk signal --turn-listen` (no coturn involved:
/// that signalling server advertises only its own relay): path `relay` on both sides over UDP,
/// the echo and 64 MiB each way intact, and the relay's `/metrics` counting the allocations
/// and at least the bytes carried.
#[tokio::test(flavor = "multi_thread")]
async fn symmetric_pairing_through_the_embedded_relay() {
    if lab::skip("symmetric_pairing_through_the_embedded_relay") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let extra = Extra {
        bytes: Some(EMBEDDED_BULK),
        ..Extra::lanes(1).embedded()
    };
    let pair = [(Nat::Symmetric, Nat::Symmetric, extra)];
    let r = tokio::time::timeout(Duration::from_secs(240), async {
        let mut lab = Lab::new().await?;
        let (rows, failures) = run_in(&mut lab, &pair).await;
        let metrics = lab.embedded_metrics();
        Ok::<_, String>((rows, failures, metrics))
    })
    .await
    .expect("the lab did not finish within 240 s");
    let (rows, failures, metrics) = r.unwrap_or_else(|e| panic!("lab setup failed: {e}"));
    eprintln!("{}", table(&rows));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if std::env::var_os("YKL_ONLY").is_some() {
        return;
    }
    assert_eq!(rows.len(), 1);
    let metrics = metrics.unwrap_or_else(|e| panic!("cannot read the relay's /metrics: {e}"));
    let made = metric(&metrics, "yakk_signal_turn_allocations_total ").expect(&metrics);
    // Each side allocates on the relay.
    assert!(made >= 2, "allocations made: {made}\n{metrics}");
    let relayed_bytes = |direction: &str| {
        metric(
            &metrics,
            &format!("yakk_signal_turn_relayed_bytes_total{{direction=\"{direction}\"}} "),
        )
        .unwrap_or_else(|| panic!("no relayed bytes {direction}:\n{metrics}"))
    };
    let (to_clients, from_clients) = (relayed_bytes("to_clients"), relayed_bytes("from_clients"));
    // The bulk went each way through the relay: into it from one side and out of it to the
    // other, or (both sides relayed) through two allocations, so at least twice the bulk.
    assert!(
        to_clients + from_clients >= 2 * EMBEDDED_BULK as u64,
        "relayed {to_clients} bytes to clients and {from_clients} from them\n{metrics}"
    );
    eprintln!(
        "lab: the embedded relay relayed {to_clients} bytes to clients, {from_clients} from them"
    );
    let refused = metric(&metrics, "yakk_signal_turn_refused_total{reason=\"auth\"} ").unwrap_or(0);
    assert_eq!(refused, 0, "{metrics}");
}

/// The pairings where the joiner's network is hostile to UDP (`udp_hostile_networks_reach_the_relay`
/// and the report): both sides port-restricted, through the signalling server on 443 with TLS
/// and its own relay.
fn hostile_networks() -> [(Nat, Nat, Extra); 3] {
    let through = |net| Extra {
        relay: RelayServer::Tls443,
        bytes: Some(EMBEDDED_BULK),
        joiner_net: net,
        ..Extra::lanes(1)
    };
    [
        (
            Nat::PortRestricted,
            Nat::PortRestricted,
            through(Net::Tcp443Only),
        ),
        (
            Nat::PortRestricted,
            Nat::PortRestricted,
            through(Net::RendezvousOnly),
        ),
        (
            Nat::PortRestricted,
            Nat::PortRestricted,
            through(Net::NoUdp),
        ),
    ]
}

/// Networks hostile to UDP still reach the other side, through the relay: a joiner whose
/// network drops every UDP datagram and lets TCP out only to the rendezvous's port 443 (where
/// wss signalling and the relay over TLS share the port) connects through TURN over TLS (its
/// `connected` says `"relay":"tls"`); one whose network reaches only the rendezvous connects
/// through the relay there over UDP (its own allocation, or the owner's); one whose network
/// drops every UDP datagram but lets any TCP out connects through TURN over TCP or over TLS.
/// The echo and 64 MiB each way arrive intact over each.
#[tokio::test(flavor = "multi_thread")]
async fn udp_hostile_networks_reach_the_relay() {
    if lab::skip("udp_hostile_networks_reach_the_relay") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let pairs = hostile_networks();
    let (rows, failures) = run_pairings(&pairs, Duration::from_secs(400)).await;
    eprintln!("{}", table(&rows));
    if std::env::var_os("YKL_ONLY").is_none() {
        assert_eq!(rows.len(), pairs.len(), "every pairing ran");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Not a test: the benchmark of the relays (bench/RELAY.md). In one lab, the same bulk (each
/// way, `YKL_BENCH_MIB`, 64 by default) over the direct path (port-restricted ↔
/// port-restricted), through coturn and through the embedded relay (both symmetric), with
/// `YKL_BENCH_RUNS` (default 3) runs of each, interleaved (`YKL_BENCH_KINDS=direct,coturn`: only
/// those). Prints a table of every run and the medians.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by hand, see bench/RELAY.md"]
async fn relay_bench() {
    if lab::skip("relay_bench") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let mib: usize = std::env::var("YKL_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let runs: usize = std::env::var("YKL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bytes = Some(mib << 20);
    let kinds = [
        (
            "direct",
            Nat::PortRestricted,
            Nat::PortRestricted,
            Extra {
                bytes,
                ..Extra::lanes(1)
            },
        ),
        (
            "coturn",
            Nat::Symmetric,
            Nat::Symmetric,
            Extra {
                bytes,
                ..Extra::lanes(1)
            },
        ),
        (
            "embedded",
            Nat::Symmetric,
            Nat::Symmetric,
            Extra {
                bytes,
                ..Extra::lanes(1).embedded()
            },
        ),
        (
            "embedded, joiner over TLS on 443",
            Nat::PortRestricted,
            Nat::PortRestricted,
            Extra {
                bytes,
                relay: RelayServer::Tls443,
                joiner_net: Net::Tcp443Only,
                ..Extra::lanes(1)
            },
        ),
        (
            "embedded, joiner without UDP",
            Nat::PortRestricted,
            Nat::PortRestricted,
            Extra {
                bytes,
                relay: RelayServer::Tls443,
                joiner_net: Net::NoUdp,
                ..Extra::lanes(1)
            },
        ),
    ];
    // `YKL_BENCH_KINDS=direct,coturn`: only the paths whose names start with one of these.
    // Names with a comma in them are separated by `;` instead:
    // `YKL_BENCH_KINDS="direct;embedded, joiner without UDP"`.
    let wanted = std::env::var("YKL_BENCH_KINDS").unwrap_or_default();
    let separator = if wanted.contains(';') { ';' } else { ',' };
    let kinds: Vec<_> = kinds
        .into_iter()
        .filter(|(name, ..)| {
            wanted.is_empty() || wanted.split(separator).any(|w| name.starts_with(w.trim()))
        })
        .collect();
    let mut pairs = Vec::new();
    for _ in 0..runs {
        for &(_, a, b, e) in &kinds {
            pairs.push((a, b, e));
        }
    }
    let budget = Duration::from_secs(120 + 150 * (runs * kinds.len()) as u64);
    let (rows, failures) = run_pairings(&pairs, budget).await;
    eprintln!("{}", table(&rows));
    let mut summary = String::from(
        "| path | runs | setup (median) | throughput each way (median) |\n|---|---|---|---|\n",
    );
    for (name, a, b, e) in kinds {
        let mut setups = Vec::new();
        let mut speeds = Vec::new();
        for o in rows.iter().flatten().filter(|o| {
            (o.owner_nat, o.joiner_nat) == (a, b)
                && o.extra.relay == e.relay
                && o.extra.joiner_net == e.joiner_net
        }) {
            setups.push(o.setup.as_secs_f64());
            speeds.push(o.mib_per_s);
        }
        summary += &format!(
            "| {name} | {} | {:.2} s | {:.1} MiB/s |\n",
            setups.len(),
            median(&mut setups),
            median(&mut speeds)
        );
    }
    eprintln!("relay bench, {mib} MiB each way:\n{summary}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--relay-only` forces the relay where the NATs would connect directly: public ↔
/// endpoint-independent with the joiner relay-only (through coturn), endpoint-independent ↔
/// public with the owner relay-only (through the embedded relay). Both sides must report a
/// `relay` path, the forced side's `connected` must say its relay leg is UDP (the side that is
/// not forced reaches the peer's relay from its own direct candidate: null), and the echo and
/// 16 MiB must arrive intact. (Through coturn, whose relayed sockets overflow (bench/RELAY.md),
/// the owner-only case once took more than 80 s for 16 MiB in a CI run: see the README.)
#[tokio::test(flavor = "multi_thread")]
async fn relay_only_forces_the_relay_on_a_direct_pairing() {
    if lab::skip("relay_only_forces_the_relay_on_a_direct_pairing") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let joiner_only = Extra {
        joiner_relay_only: true,
        ..Extra::lanes(1)
    };
    let owner_only = Extra {
        owner_relay_only: true,
        ..Extra::lanes(1).embedded()
    };
    let runs = [
        (Nat::Public, Nat::Eim, joiner_only),
        (Nat::Eim, Nat::Public, owner_only),
    ];
    let (rows, failures) = run_pairings(&runs, Duration::from_secs(120)).await;
    eprintln!("{}", table(&rows));
    if std::env::var_os("YKL_ONLY").is_none() {
        assert_eq!(rows.len(), runs.len(), "every pairing ran");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for o in rows.iter().flatten() {
        for (path, relay, only) in [
            (&o.owner_path, &o.owner_relay, o.extra.owner_relay_only),
            (&o.joiner_path, &o.joiner_relay, o.extra.joiner_relay_only),
        ] {
            assert_eq!(path, "relay", "{o:?}");
            if only {
                assert_eq!(relay, "udp", "{o:?}");
            }
        }
    }
}

/// All ten pairings, written to `$YKL_REPORT` as a table (`lab/run-report`); fails if any
/// pairing did.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the report generator: run by lab/run-report"]
async fn report() {
    if lab::skip("report") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let mut all = pairings(None);
    all.push((
        Nat::Symmetric,
        Nat::Symmetric,
        Extra {
            bytes: Some(EMBEDDED_BULK),
            ..Extra::lanes(1).embedded()
        },
    ));
    all.extend(hostile_networks());
    let (rows, failures) = run_pairings(&all, Duration::from_secs(800)).await;
    eprintln!("{}", table(&rows));
    write_report(&rows);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With no relay configured and no direct path (both symmetric), both sides give up within a
/// bounded time, saying a relay is needed and how to configure one.
#[tokio::test(flavor = "multi_thread")]
async fn no_relay_and_no_direct_path_fails_clearly_in_time() {
    if lab::skip("no_relay_and_no_direct_path_fails_clearly_in_time") {
        return;
    }
    let _one = ONE_LAB.lock().await;
    let r = tokio::time::timeout(Duration::from_secs(60), async {
        let mut lab = Lab::new().await?;
        lab.pairing(Nat::Symmetric, Nat::Symmetric)?;
        let signal = lab.signal_url(false);
        let port = ECHO_PORT.to_string();
        let mut owner = lab.spawn(
            0,
            "owner",
            &[
                lab::BIN,
                "server",
                "-p",
                &port,
                "--json",
                "--signal",
                &signal,
            ],
            &[],
        )?;
        let code = owner.event("code", Duration::from_secs(15)).await?;
        let code = code["code"].as_str().ok_or("no code")?.to_string();
        let jport = JOIN_PORT.to_string();
        let started = Instant::now();
        let mut joiner = lab.spawn(
            1,
            "joiner",
            &[
                lab::BIN,
                "client",
                "-p",
                &jport,
                "--json",
                "--signal",
                &signal,
                &code,
            ],
            &[],
        )?;
        let err = joiner.event("error", Duration::from_secs(25)).await?;
        let joiner_secs = started.elapsed().as_secs_f64();
        // Nothing listens on the owner's shared port in this lab (no connection gets that
        // far): it warns about that first.
        let mut warn = owner.event("warning", Duration::from_secs(10)).await?;
        if warn["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("nothing listens"))
        {
            warn = owner.event("warning", Duration::from_secs(10)).await?;
        }
        let owner_secs = started.elapsed().as_secs_f64();
        let code = joiner.exit_code(Duration::from_secs(5)).await?;
        Ok::<_, String>((err, warn, code, joiner_secs, owner_secs))
    })
    .await
    .expect("bounded");
    let (err, warn, code, joiner_secs, owner_secs) = r.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "lab: no relay: joiner failed after {joiner_secs:.1} s ({err}), owner after {owner_secs:.1} s ({warn})"
    );
    for (who, msg) in [("joiner", &err["message"]), ("owner", &warn["message"])] {
        let msg = msg.as_str().unwrap_or("");
        assert!(
            msg.contains("relay") && msg.contains("TURN") && msg.contains("--turn"),
            "{who}'s message does not say a relay is needed and how: {msg}"
        );
    }
    assert_eq!(code, 7, "exit code 7 = no network path");
    assert!(err["exit_code"] == json!(7), "{err}");
    assert!(joiner_secs < 20.0, "the joiner took {joiner_secs:.1} s");
    assert!(owner_secs < 22.0, "the owner took {owner_secs:.1} s");
}

/// Not a test: the lab runs this binary inside a namespace as a helper process, with
/// `YKL_HELPER=echo` (an echo server on `YKL_ADDR`) or `YKL_HELPER=load` (an echo and a
/// `YKL_BYTES` echo through `YKL_ADDR`, result printed as `YKL-RESULT {json}`).
#[test]
#[ignore = "helper process of the NAT lab, not a test"]
fn lab_helper() {
    let Ok(role) = std::env::var("YKL_HELPER") else {
        return;
    };
    let addr = std::env::var("YKL_ADDR").expect("YKL_ADDR");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match role.as_str() {
            "echo" => echo_server(&addr).await,
            "load" => {
                let n: usize = std::env::var("YKL_BYTES")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(BULK);
                let secs: u64 = std::env::var("YKL_SECS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(80);
                let r = tokio::time::timeout(Duration::from_secs(secs), load(&addr, n))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("the transfer did not finish within {secs} s"))
                    });
                let v = match r {
                    Ok(v) => v,
                    Err(e) => json!({"ok": false, "error": e}),
                };
                println!("YKL-RESULT {v}");
            }
            other => panic!("unknown helper {other}"),
        }
    });
}

async fn echo_server(addr: &str) {
    let l = TcpListener::bind(addr).await.expect("bind echo server");
    println!("YKL-READY");
    // Runs until the lab kills it.
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` on a new connection to `addr`, half-closes, reads until EOF; returns the
/// SHA-256 and length of what came back.
async fn echo_through(addr: &str, data: Vec<u8>) -> Result<([u8; 32], usize), String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(256 * 1024) {
            w.write_all(chunk).await?;
        }
        w.shutdown().await
    });
    let mut h = Sha256::new();
    let mut n = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = r.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k;
    }
    writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write: {e}"))?;
    Ok((h.finalize().into(), n))
}

async fn load(addr: &str, n: usize) -> Result<Value, String> {
    let hello = b"hello across the NATs\n".to_vec();
    let t = Instant::now();
    let (h, len) = echo_through(addr, hello.clone()).await?;
    if len != hello.len() || h != <[u8; 32]>::from(Sha256::digest(&hello)) {
        return Err(format!("the echo came back wrong ({len} bytes)"));
    }
    let echo_ms = t.elapsed().as_secs_f64() * 1e3;
    let data = pattern(n, 8);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let t = Instant::now();
    let (h, len) = echo_through(addr, data).await?;
    let secs = t.elapsed().as_secs_f64();
    if len != n || h != want {
        return Err(format!("the bulk echo came back wrong: {len} of {n} bytes"));
    }
    Ok(json!({"ok": true, "echo_ms": echo_ms, "bulk_secs": secs, "bytes": n}))
}
