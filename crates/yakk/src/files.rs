//! `yakk filesend` and `yakk filereceive`: the owner offers files, the joiner fetches them over
//! one stream (yakk/2 transfer protocol, or HTTP for yakk/1 peers).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use yakk_session::{Owner, OwnerEvent, Version};
use yakk_transfer::{
    Destination, DoneInfo, HumanBytes, JsonReporter, Manifest, ReceiveOptions, Reporter, StartInfo,
    TerminalReporter, TransferError,
};

use crate::cli::{FilereceiveArgs, FilesendArgs};
use crate::exit::{ExitCode, Failure};
use crate::forward::connected_event;
use crate::interrupt::Interrupt;
use crate::output::Out;
use crate::peer;

/// Which side we are, for the words of a message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Sender,
    Receiver,
}

/// What a failure message says of the transfer it ended.
struct Ended<'a> {
    side: Side,
    rep: &'a Recording,
    /// Partial files can be resumed (yakk/2, files rather than standard input, not --stdout).
    resumable: bool,
    /// The receiver's folder, as the person can find it.
    folder: Option<String>,
}

impl Ended<'_> {
    /// What stays after a transfer that ended early, and what to do next; None before the data
    /// phase (nothing moved).
    fn what_stays(&self) -> Option<String> {
        self.rep.started()?;
        Some(match (self.side, self.resumable) {
            (Side::Receiver, true) => format!(
                "the partial files are kept{}: ask the sender for a new code and receive again, the transfer continues where it stopped",
                self.folder
                    .as_deref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default()
            ),
            (Side::Sender, true) => "the receiver keeps what it received: run yakk filesend again and give it the new code, the transfer continues where it stopped"
                .into(),
            (Side::Receiver, false) => "this transfer cannot be resumed, nothing of it was kept".into(),
            (Side::Sender, false) => "this transfer cannot be resumed".into(),
        })
    }

    /// " at 12.00 MiB of 40.00 MiB" once data moved, else "".
    fn at(&self) -> String {
        self.rep
            .how_far()
            .map(|f| format!(" at {f}"))
            .unwrap_or_default()
    }

    fn failure(&self, e: TransferError) -> Failure {
        let peer = match self.side {
            Side::Sender => "receiver",
            Side::Receiver => "sender",
        };
        let nothing = match self.side {
            Side::Sender => "nothing was sent",
            Side::Receiver => "nothing was received",
        };
        match e {
            TransferError::Stopped => Failure::stopped(match self.what_stays() {
                Some(stays) => format!("Stopped{}; {stays}.", self.at()),
                None => format!("Stopped: {nothing}."),
            }),
            TransferError::PeerStopped => Failure::new(
                ExitCode::PeerGone,
                match self.what_stays() {
                    Some(stays) => format!("the {peer} stopped the transfer{}; {stays}", self.at()),
                    None => format!("the {peer} stopped the transfer: {nothing}"),
                },
            ),
            TransferError::Connection(_) | TransferError::PeerClosed => Failure::new(
                ExitCode::PeerGone,
                match self.what_stays() {
                    Some(stays) => format!("{e}{}; {stays}", self.at()),
                    None => format!("{e}: {nothing}"),
                },
            ),
            // Refusing an offer (asked, or because of what is on disk) exits as the sender
            // does when it hears of it.
            TransferError::Declined
            | TransferError::PeerRefused(_)
            | TransferError::FileExists(_)
            | TransferError::ExistsAsFolder(_)
            | TransferError::NotAFolder(_)
            | TransferError::Symlink(_)
            | TransferError::UnsafeName { .. } => Failure::new(ExitCode::Refused, e.to_string()),
            e => Failure::new(ExitCode::Error, e.to_string()),
        }
    }
}

/// After the protocol's last word: shut down our side and wait (briefly) for the peer to close
/// its side, so that the last messages are delivered before the peer connection is torn down.
async fn linger(stream: &mut yakk_session::Stream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Whether the peer may still be reading our last words: after a success, and after an error
/// we told it about (a refusal, a declined offer, a failed check), but not once the connection
/// is gone.
fn peer_may_listen<T>(result: &Result<T, TransferError>) -> bool {
    !matches!(
        result,
        Err(TransferError::Connection(_) | TransferError::PeerClosed)
    )
}

/// Passes everything to the chosen reporter and keeps the figures for the last words.
struct Recording {
    inner: Box<dyn Reporter + Send + Sync>,
    start: std::sync::Mutex<Option<StartInfo>>,
    /// Bytes of the whole transfer done (resumed ones included) at the last progress.
    bytes: std::sync::Mutex<Option<u64>>,
    done: std::sync::Mutex<Option<DoneInfo>>,
}

impl Recording {
    fn new(inner: Box<dyn Reporter + Send + Sync>) -> Self {
        Recording {
            inner,
            start: std::sync::Mutex::new(None),
            bytes: std::sync::Mutex::new(None),
            done: std::sync::Mutex::new(None),
        }
    }

    /// The start of the data phase, if it came.
    fn started(&self) -> Option<StartInfo> {
        self.start.lock().unwrap().clone()
    }

    /// "12.00 MiB of 40.00 MiB" (or "12.00 MiB" when the size is unknown) once data moved.
    fn how_far(&self) -> Option<String> {
        let start = self.started()?;
        let bytes = self.bytes.lock().unwrap().unwrap_or(start.resumed_bytes);
        Some(match start.total_bytes {
            Some(t) => format!("{} of {}", HumanBytes(bytes), HumanBytes(t)),
            None => format!("{}", HumanBytes(bytes)),
        })
    }

    /// " in 4.2 s, 244.14 MiB/s" once the transfer finished, else nothing.
    fn took(&self) -> String {
        let Some(d) = self.done.lock().unwrap().clone() else {
            return String::new();
        };
        let secs = d.elapsed.as_secs_f64();
        let rate = (d.bytes_transferred as f64 / secs.max(1e-3)) as u64;
        format!(" in {secs:.1} s, {}/s", HumanBytes(rate))
    }
}

impl Reporter for Recording {
    fn start(&self, i: &StartInfo) {
        *self.start.lock().unwrap() = Some(i.clone());
        self.inner.start(i)
    }
    fn file_start(&self, name: &str, size: Option<u64>, offset: u64) {
        self.inner.file_start(name, size, offset)
    }
    fn progress(&self, p: &yakk_transfer::Progress<'_>) {
        *self.bytes.lock().unwrap() = Some(p.bytes);
        self.inner.progress(p)
    }
    fn abandon(&self) {
        self.inner.abandon()
    }
    fn file_done(&self, name: &str, size: u64) {
        self.inner.file_done(name, size)
    }
    fn done(&self, d: &DoneInfo) {
        *self.done.lock().unwrap() = Some(d.clone());
        self.inner.done(d)
    }
}

/// The summary of a finished transfer, in the same words and units on both sides: every file
/// of the offer is counted (empty ones, and ones that were already there, included).
fn last_words(side: Side, files: u64, moved: u64, already: u64, took: &str) -> String {
    let (verb, there) = match side {
        Side::Sender => ("Sent", "there"),
        Side::Receiver => ("Received", "here"),
    };
    if moved == 0 && already > 0 {
        return match side {
            Side::Sender => format!(
                "Nothing to send: the receiver already had all {files} file(s) ({}).",
                HumanBytes(already)
            ),
            Side::Receiver => format!(
                "Nothing to receive: all {files} file(s) ({}) were already here.",
                HumanBytes(already)
            ),
        };
    }
    let mut s = format!("{verb} {files} file(s), {}{took}", HumanBytes(moved));
    if already > 0 {
        s.push_str(&format!(" ({} were already {there})", HumanBytes(already)));
    }
    s.push('.');
    s
}

/// " Saved in /abs/out: a.txt, tree/." (a few names), or nothing with `--stdout`.
fn saved(paths: &[std::path::PathBuf], output: &std::path::Path) -> String {
    if paths.is_empty() {
        return String::new();
    }
    const NAMED: usize = 3;
    let mut names: Vec<String> = paths
        .iter()
        .take(NAMED)
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy();
            let slash = if p.is_dir() { "/" } else { "" };
            Some(format!("{}{slash}", yakk_transfer::names::escape(&name)))
        })
        .collect();
    if paths.len() > NAMED {
        names.push(format!("and {} more", paths.len() - NAMED));
    }
    format!(" Saved in {}: {}.", shown_folder(output), names.join(", "))
}

/// The receiving folder as the person can find it: absolute, escaped.
fn shown_folder(dir: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    yakk_transfer::names::escape(&abs.display().to_string())
}

fn reporter(out: Out, data_on_stdout: bool) -> Box<dyn Reporter + Send + Sync> {
    if out.json && !data_on_stdout {
        Box::new(JsonReporter::stdout())
    } else if out.json {
        Box::new(JsonReporter::new(
            std::io::stderr(),
            std::time::Duration::from_millis(500),
        ))
    } else {
        Box::new(TerminalReporter::new())
    }
}

/// `--name`: only for standard input, and a plain file name the receiver will accept.
fn stdin_name(args: &FilesendArgs) -> Result<Option<String>, Failure> {
    let Some(name) = &args.name else {
        return Ok(None);
    };
    let shown = yakk_transfer::names::escape(name);
    if !matches!(args.paths.as_slice(), [p] if p.as_os_str() == "-") {
        return Err(Failure::usage(format!(
            "--name {shown}: --name names standard input, give it with - alone"
        )));
    }
    if let Err(reason) = yakk_transfer::names::check_component(name) {
        return Err(Failure::usage(format!(
            "--name {shown}: not a plain file name ({reason})"
        )));
    }
    if name.starts_with(".yakk-") && name.ends_with(".part") {
        return Err(Failure::usage(format!(
            "--name {shown}: names like this are yakk's partial files"
        )));
    }
    Ok(Some(name.clone()))
}

pub async fn send(mut args: FilesendArgs, out: Out) -> anyhow::Result<()> {
    let stdin_name = stdin_name(&args)?;
    // Everything about the paths given (missing, the same name twice, a name that cannot be
    // sent) is refused before a code is handed out: the walk is quick, reading the files is
    // not, so they are hashed while the room opens.
    let listing = match stdin_name {
        Some(_) => None,
        None => {
            let paths = args.paths.clone();
            let listed = tokio::task::spawn_blocking(move || Manifest::list(&paths))
                .await
                .map_err(|_| Failure::new(ExitCode::Error, "listing the files failed"))?;
            Some(listed.map_err(|e| Failure::usage(e.to_string()))?)
        }
    };
    let interrupt = Interrupt::listen();
    let mut setup = peer::owner_setup(&mut args.common, args.owner.code_length, out).await?;
    setup.config.max_peers = Some(args.max_peers.max(1));
    setup.config.allow_retries = args.owner.allow_retries;
    let scan = tokio::task::spawn_blocking(move || match (stdin_name, listing) {
        (Some(name), _) => Ok(Manifest::stdin(&name)),
        (None, Some(listing)) => listing.hash(),
        (None, None) => unreachable!("listed above"),
    });
    let mut owner = Owner::create(setup.config.clone())
        .await
        .map_err(Failure::from)?;
    peer::announce(out, &setup, &owner.room, "filereceive", args.owner.qr);
    let manifest = tokio::select! {
        m = scan => m,
        () = interrupt.wait() => {
            return Err(Failure::stopped("Stopped while reading the files to send.").into());
        }
    };
    let manifest = manifest
        .map_err(|_| Failure::new(ExitCode::Error, "reading the files failed"))?
        .map_err(|e| Failure::new(ExitCode::Error, e.to_string()))?;
    for skipped in manifest.skipped() {
        out.event(
            "warning",
            json!({"message": "skipped", "path": skipped.display().to_string()}),
            Some(&format!(
                "Skipping {} (links and partial downloads are not sent)",
                yakk_transfer::names::escape(&skipped.display().to_string())
            )),
        );
    }
    out.say(&format!(
        "Offering {}. Waiting for the receiver…",
        manifest.summary().headline()
    ));
    let manifest = Arc::new(manifest);
    let mut served = 0u32;
    while served < args.max_peers.max(1) {
        let ev = tokio::select! {
            ev = owner.next() => ev,
            () = interrupt.wait() => {
                return Err(Failure::stopped("Stopped while waiting for a receiver.").into());
            }
        };
        let conn = match ev {
            None => {
                return Err(Failure::new(
                    ExitCode::SignalUnreachable,
                    "lost the connection to the signalling server; the room is gone",
                )
                .into());
            }
            Some(OwnerEvent::Failed { error, .. }) => {
                let f = Failure::from(error);
                out.event(
                    "warning",
                    json!({"message": f.message}),
                    Some(&format!("A receiver failed: {}", f.message)),
                );
                continue;
            }
            Some(OwnerEvent::Burned) => {
                // The receiver learns its password was wrong from our key confirmation.
                owner.close().await;
                setup.drain_embedded().await;
                out.event(
                    "burned",
                    json!({"message": "the code is burned after a failed password attempt"}),
                    None,
                );
                return Err(Failure::new(
                    ExitCode::WrongPassword,
                    "someone tried a wrong password, so the code was burned: run filesend again for a new code",
                )
                .into());
            }
            Some(OwnerEvent::Connected(c)) => *c,
        };
        connected_event(out, &conn, "receiver");
        let stream = tokio::select! {
            s = conn.accept_stream() => s,
            why = conn.closed() => return Err(Failure::new(ExitCode::PeerGone, format!("the receiver went away: {why}")).into()),
            () = interrupt.wait() => return Err(Failure::stopped("Stopped: nothing was sent.").into()),
        };
        let Some((_, mut stream)) = stream else {
            return Err(Failure::new(ExitCode::PeerGone, "the receiver went away").into());
        };
        let rep = Arc::new(Recording::new(reporter(out, false)));
        let result = match conn.version() {
            Version::V1 => tokio::select! {
                r = serve_legacy(&conn, stream, &manifest, &rep, out) => r,
                () = interrupt.wait() => Err(TransferError::Stopped),
            },
            Version::V2 => {
                let result =
                    yakk_transfer::send_until(&mut stream, &manifest, &*rep, &interrupt.stop())
                        .await;
                if peer_may_listen(&result) {
                    linger(&mut stream).await;
                }
                result
            }
        };
        if result.is_err() {
            rep.abandon();
        }
        let ended = Ended {
            side: Side::Sender,
            rep: &rep,
            resumable: conn.version() == Version::V2
                && rep.started().is_some_and(|s| s.total_bytes.is_some()),
            folder: None,
        };
        let summary = result.map_err(|e| ended.failure(e))?;
        served += 1;
        out.say(&last_words(
            Side::Sender,
            summary.files(),
            summary.bytes_sent,
            summary.resumed_bytes,
            &rep.took(),
        ));
        conn.close().await;
    }
    Ok(())
}

/// yakk/1: one HTTP request per stream, and a receiver may open several (the original
/// program's downloader asks `HEAD`, then `GET` on a new channel). Serves every stream the
/// receiver opens, each on its own, until a `GET` has carried the file; a request that fails is
/// reported and does not end the session.
async fn serve_legacy(
    conn: &yakk_session::Connection,
    first: yakk_session::Stream,
    manifest: &Arc<Manifest>,
    rep: &Arc<Recording>,
    out: Out,
) -> Result<yakk_transfer::SendSummary, TransferError> {
    let mut serving = tokio::task::JoinSet::new();
    let serve = |serving: &mut tokio::task::JoinSet<_>, mut stream: yakk_session::Stream| {
        let (manifest, rep) = (manifest.clone(), rep.clone());
        serving.spawn(async move {
            let result = yakk_transfer::serve_http_v1(&mut stream, &manifest, &*rep).await;
            if peer_may_listen(&result) {
                linger(&mut stream).await;
            }
            result
        });
    };
    serve(&mut serving, first);
    // Once the receiver is gone, the requests in flight still finish (a GET that carried the
    // whole file counts even if the receiver left while we lingered).
    let mut gone = false;
    loop {
        if gone && serving.is_empty() {
            return Err(TransferError::PeerClosed);
        }
        tokio::select! {
            done = serving.join_next(), if !serving.is_empty() => {
                let failed = match done {
                    Some(Ok(Ok(yakk_transfer::V1Served::File(summary)))) => return Ok(summary),
                    Some(Ok(Ok(yakk_transfer::V1Served::Head))) | None => continue,
                    Some(Ok(Err(e))) => e.to_string(),
                    Some(Err(e)) => format!("the request's task failed: {e}"),
                };
                out.event(
                    "warning",
                    json!({"message": failed}),
                    Some(&format!("A request of the receiver failed: {failed}")),
                );
            }
            s = conn.accept_stream(), if !gone => match s {
                Some((_, stream)) => serve(&mut serving, stream),
                None => gone = true,
            },
        }
    }
}

/// The `offer` event: what the sender offers, as the receiver's question shows it.
fn offer_event(offer: &yakk_transfer::OfferSummary) -> serde_json::Value {
    let entries: Vec<_> = offer
        .entries
        .iter()
        .map(|e| json!({"name": e.name, "size": e.size, "folder": e.is_dir}))
        .collect();
    json!({
        "files": offer.files,
        "folders": offer.folders,
        "total_bytes": (!offer.size_unknown).then_some(offer.total_bytes),
        "entries": entries,
    })
}

pub async fn receive(mut args: FilereceiveArgs, out: Out) -> anyhow::Result<()> {
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to ask whether to accept the offer: pass --yes to accept it without asking",
        )
        .into());
    }
    let (config, room, from_code) =
        peer::joiner_config(&mut args.common, std::mem::take(&mut args.code), out)?;
    // After the prompt for the code: Ctrl-C there still ends the process at once.
    let interrupt = Interrupt::listen();
    let conn = tokio::select! {
        c = yakk_session::join(config, &room) => c.map_err(|e| peer::join_failure(e, from_code))?,
        () = interrupt.wait() => return Err(Failure::stopped("Stopped before connecting.").into()),
    };
    if !args.stdout {
        connected_event(out, &conn, "sender");
    }
    let mut stream = tokio::select! {
        s = conn.open_stream("DataConn1") => s.map_err(Failure::from)?,
        () = interrupt.wait() => return Err(Failure::stopped("Stopped: nothing was received.").into()),
    };
    let destination = if args.stdout {
        Destination::Writer(Box::new(tokio::io::stdout()))
    } else {
        Destination::Dir(args.output.clone())
    };
    // Set while the question waits for its answer: a message that ends it starts a new line.
    let asking = Arc::new(AtomicBool::new(false));
    let confirm: Option<yakk_transfer::Confirm> = if args.yes && !out.json {
        None
    } else {
        let asking = asking.clone();
        let yes = args.yes;
        Some(Box::new(move |offer: &yakk_transfer::OfferSummary| {
            out.event("offer", offer_event(offer), None);
            if yes {
                return true;
            }
            eprintln!("{offer}");
            eprint!("Accept? [y/N] ");
            asking.store(true, Ordering::SeqCst);
            let mut line = String::new();
            let yes = std::io::stdin().read_line(&mut line).is_ok()
                && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
            asking.store(false, Ordering::SeqCst);
            yes
        }))
    };
    let opts = ReceiveOptions {
        destination,
        overwrite: args.overwrite,
        skip_identical: args.skip_identical,
        confirm,
    };
    let rep = Recording::new(reporter(out, args.stdout));
    let result = match conn.version() {
        Version::V1 => tokio::select! {
            r = yakk_transfer::fetch_http_v1(&mut stream, opts, &rep) => r,
            () = interrupt.wait() => Err(TransferError::Stopped),
        },
        Version::V2 => {
            yakk_transfer::receive_until(&mut stream, opts, &rep, &interrupt.stop()).await
        }
    };
    if result.is_err() {
        rep.abandon();
        if asking.load(Ordering::SeqCst) {
            eprintln!();
        }
    }
    if peer_may_listen(&result) {
        linger(&mut stream).await;
    }
    let ended = Ended {
        side: Side::Receiver,
        rep: &rep,
        resumable: conn.version() == Version::V2
            && !args.stdout
            && rep.started().is_some_and(|s| s.total_bytes.is_some()),
        folder: (!args.stdout).then(|| shown_folder(&args.output)),
    };
    let summary = result.map_err(|e| ended.failure(e))?;
    if !out.json {
        eprintln!(
            "{}{}",
            last_words(
                Side::Receiver,
                summary.files(),
                summary.bytes_received,
                summary.resumed_bytes,
                &rep.took(),
            ),
            saved(&summary.paths, &args.output)
        );
    }
    conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides count every file of the offer and say the same figures.
    #[test]
    fn both_sides_say_the_same_words() {
        // A folder of 6 files, one of them empty: 5 carried data.
        assert_eq!(
            last_words(Side::Sender, 6, 2048, 0, " in 0.1 s, 20.00 KiB/s"),
            "Sent 6 file(s), 2.00 KiB in 0.1 s, 20.00 KiB/s."
        );
        assert_eq!(
            last_words(Side::Receiver, 6, 2048, 0, " in 0.1 s, 20.00 KiB/s"),
            "Received 6 file(s), 2.00 KiB in 0.1 s, 20.00 KiB/s."
        );
        assert_eq!(
            last_words(Side::Receiver, 2, 1 << 20, 3 << 20, ""),
            "Received 2 file(s), 1.00 MiB (3.00 MiB were already here)."
        );
        assert_eq!(
            last_words(Side::Sender, 2, 1 << 20, 3 << 20, ""),
            "Sent 2 file(s), 1.00 MiB (3.00 MiB were already there)."
        );
        // Nothing moved because everything was there: said plainly, not "0 file(s), 0 B".
        assert_eq!(
            last_words(Side::Receiver, 1, 0, 300_000_000, " in 0.0 s, 0 B/s"),
            "Nothing to receive: all 1 file(s) (286.10 MiB) were already here."
        );
        assert_eq!(
            last_words(Side::Sender, 1, 0, 300_000_000, " in 0.0 s, 0 B/s"),
            "Nothing to send: the receiver already had all 1 file(s) (286.10 MiB)."
        );
    }
}
