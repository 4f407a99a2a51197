//! `yakk filesend` and `yakk filereceive`: the owner offers files, the joiner fetches them over
//! one stream (yakk/2 transfer protocol, or HTTP for yakk/1 peers).

use std::io::IsTerminal;
use std::sync::Arc;

use serde_json::json;
use yakk_session::{Owner, OwnerEvent, Version};
use yakk_transfer::{
    Destination, DoneInfo, HumanBytes, JsonReporter, Manifest, ReceiveOptions, Reporter,
    TerminalReporter, TransferError,
};

use crate::cli::{FilereceiveArgs, FilesendArgs};
use crate::exit::{ExitCode, Failure};
use crate::forward::connected_event;
use crate::output::Out;
use crate::peer;

fn transfer_failure(e: TransferError) -> Failure {
    let code = match &e {
        TransferError::Declined | TransferError::PeerRefused(_) => ExitCode::Refused,
        TransferError::Connection(_) | TransferError::PeerClosed => ExitCode::PeerGone,
        _ => ExitCode::Error,
    };
    Failure::new(code, e.to_string())
}

/// After the protocol's last word: shut down our side and wait (briefly) for the peer to close
/// its side, so that the last messages are delivered before the peer connection is torn down.
async fn linger(stream: &mut yakk_session::Stream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
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

/// Passes everything to the chosen reporter and keeps the final figures for the summary line.
struct Recording {
    inner: Box<dyn Reporter + Send + Sync>,
    done: std::sync::Mutex<Option<DoneInfo>>,
}

impl Recording {
    fn new(inner: Box<dyn Reporter + Send + Sync>) -> Self {
        Recording {
            inner,
            done: std::sync::Mutex::new(None),
        }
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
    fn start(&self, i: &yakk_transfer::StartInfo) {
        self.inner.start(i)
    }
    fn file_start(&self, name: &str, size: Option<u64>, offset: u64) {
        self.inner.file_start(name, size, offset)
    }
    fn progress(&self, p: &yakk_transfer::Progress<'_>) {
        self.inner.progress(p)
    }
    fn file_done(&self, name: &str, size: u64) {
        self.inner.file_done(name, size)
    }
    fn done(&self, d: &DoneInfo) {
        *self.done.lock().unwrap() = Some(d.clone());
        self.inner.done(d)
    }
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

pub async fn send(mut args: FilesendArgs, out: Out) -> anyhow::Result<()> {
    let mut setup = peer::owner_setup(&mut args.common, out).await?;
    setup.config.max_peers = Some(args.max_peers.max(1));
    setup.config.allow_retries = args.owner.allow_retries;
    // Refuse missing paths before a code is handed out.
    for p in &args.paths {
        if p.as_os_str() == "-" {
            continue;
        }
        if let Err(e) = std::fs::symlink_metadata(p) {
            return Err(Failure::usage(format!(
                "cannot send {}: {e}",
                yakk_transfer::names::escape(&p.display().to_string())
            ))
            .into());
        }
    }
    let paths = args.paths.clone();
    let scan = tokio::task::spawn_blocking(move || Manifest::scan(&paths));
    let mut owner = Owner::create(setup.config.clone())
        .await
        .map_err(Failure::from)?;
    peer::announce(out, &setup, &owner.room, "filereceive", args.owner.qr);
    let manifest = scan
        .await
        .map_err(|_| Failure::new(ExitCode::Error, "scanning the files failed"))?
        .map_err(transfer_failure)?;
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
        "Offering {} file(s), {} bytes. Waiting for the receiver…",
        manifest.file_count(),
        manifest.total_bytes()
    ));
    let manifest = Arc::new(manifest);
    let mut served = 0u32;
    while served < args.max_peers.max(1) {
        let ev = tokio::select! {
            ev = owner.next() => ev,
            _ = tokio::signal::ctrl_c() => return Err(Failure::new(ExitCode::Error, "interrupted").into()),
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
        };
        let Some((_, mut stream)) = stream else {
            return Err(Failure::new(ExitCode::PeerGone, "the receiver went away").into());
        };
        let rep = Recording::new(reporter(out, false));
        let result = match conn.version() {
            Version::V1 => yakk_transfer::serve_http_v1(&mut stream, &manifest, &rep).await,
            Version::V2 => yakk_transfer::send(&mut stream, &manifest, &rep).await,
        };
        if peer_may_listen(&result) {
            linger(&mut stream).await;
        }
        let summary = result.map_err(transfer_failure)?;
        served += 1;
        out.say(&format!(
            "Sent {} file(s), {}{}{}.",
            summary.files_sent,
            HumanBytes(summary.bytes_sent),
            rep.took(),
            if summary.resumed_bytes > 0 {
                format!(
                    " ({} were already there)",
                    HumanBytes(summary.resumed_bytes)
                )
            } else {
                String::new()
            }
        ));
        conn.close().await;
    }
    Ok(())
}

pub async fn receive(mut args: FilereceiveArgs, out: Out) -> anyhow::Result<()> {
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to ask whether to accept the offer: pass --yes to accept it without asking",
        )
        .into());
    }
    let (config, room) = peer::joiner_config(&mut args.common, args.code.take(), out)?;
    let conn = tokio::select! {
        c = yakk_session::join(config, &room) => c.map_err(Failure::from)?,
        _ = tokio::signal::ctrl_c() => return Err(Failure::new(ExitCode::Error, "interrupted").into()),
    };
    if !args.stdout {
        connected_event(out, &conn, "sender");
    }
    let mut stream = conn.open_stream("DataConn1").await.map_err(Failure::from)?;
    let destination = if args.stdout {
        Destination::Writer(Box::new(tokio::io::stdout()))
    } else {
        Destination::Dir(args.output.clone())
    };
    let confirm: Option<yakk_transfer::Confirm> = if args.yes {
        None
    } else {
        Some(Box::new(|offer: &yakk_transfer::OfferSummary| {
            eprintln!("{offer}");
            eprint!("Accept? [y/N] ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).is_ok()
                && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
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
        Version::V1 => yakk_transfer::fetch_http_v1(&mut stream, opts, &rep).await,
        Version::V2 => yakk_transfer::receive(&mut stream, opts, &rep).await,
    };
    if peer_may_listen(&result) {
        linger(&mut stream).await;
    }
    let summary = result.map_err(transfer_failure)?;
    if !out.json {
        eprintln!(
            "Received {} file(s), {}{}{}.",
            summary.files_received,
            HumanBytes(summary.bytes_received),
            rep.took(),
            if summary.resumed_bytes > 0 {
                format!(
                    " (resumed: {} were already here)",
                    HumanBytes(summary.resumed_bytes)
                )
            } else {
                String::new()
            }
        );
    }
    conn.close().await;
    Ok(())
}
