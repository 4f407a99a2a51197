//! `yakk filesend` and `yakk filereceive`: the owner offers files, the joiner fetches them over
//! one stream (yakk/2 transfer protocol, or HTTP for yakk/1 peers).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use yakk_session::{Owner, OwnerEvent, Version};
use yakk_transfer::{Destination, Manifest, Protocol, ReceiveOptions};

use crate::cli::{FilereceiveArgs, FilesendArgs};
use crate::exit::{ExitCode, Failure};
use crate::interrupt::Interrupt;
use crate::output::Out;
use crate::owner_setup;
use crate::session_setup::{self, connected_event};
use crate::transfer_report::{Ended, Recording, Side, last_words, reporter, saved, shown_folder};

/// The transfer the session's protocol asks for.
fn protocol(version: Version) -> Protocol {
    match version {
        Version::V1 => Protocol::V1,
        Version::V2 => Protocol::V2,
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

/// What `filesend` offers: standard input under a name, or the files listed.
enum Source {
    Stdin(String),
    Files(yakk_transfer::Listing),
}

pub async fn send(mut args: FilesendArgs, out: Out) -> anyhow::Result<()> {
    let stdin_name = stdin_name(&args)?;
    // Everything about the paths given (missing, the same name twice, a name that cannot be
    // sent) is refused before a code is handed out: the walk is quick, reading the files is
    // not, so they are hashed while the room opens.
    let source = match stdin_name {
        Some(name) => Source::Stdin(name),
        None => {
            let paths = args.paths.clone();
            let listed = tokio::task::spawn_blocking(move || Manifest::list(&paths))
                .await
                .map_err(|_| Failure::new(ExitCode::Error, "listing the files failed"))?;
            Source::Files(listed.map_err(|e| Failure::usage(e.to_string()))?)
        }
    };
    let interrupt = Interrupt::listen();
    let mut setup = owner_setup::owner_setup(&mut args.common, args.owner.code_length, out).await?;
    setup.config.max_peers = Some(args.max_peers.max(1));
    setup.config.allow_retries = args.owner.allow_retries;
    let scan = tokio::task::spawn_blocking(move || match source {
        Source::Stdin(name) => Ok(Manifest::stdin(&name)),
        Source::Files(listing) => listing.hash(),
    });
    let mut owner = Owner::create(setup.config.clone())
        .await
        .map_err(Failure::from)?;
    owner_setup::announce(out, &setup, &owner.room, "filereceive", args.owner.qr);
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
        let Some((_, stream)) = stream else {
            return Err(Failure::new(ExitCode::PeerGone, "the receiver went away").into());
        };
        let rep = Arc::new(Recording::new(reporter(out, false), out));
        let protocol = protocol(conn.version());
        let more = || async { conn.accept_stream().await.map(|(_, s)| s) };
        let result = yakk_transfer::send_for(
            protocol,
            stream,
            more,
            &manifest,
            rep.clone(),
            &interrupt.stop(),
        )
        .await;
        let ended = Ended {
            side: Side::Sender,
            rep: &rep,
            resumable: protocol.resumes() && rep.started().is_some_and(|s| s.total_bytes.is_some()),
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
    if !args.stdout {
        // A file where the folder should be: said now, before the sender's code is used up.
        yakk_transfer::check_destination(&args.output)
            .map_err(|e| Failure::usage(e.to_string()))?;
    }
    let (config, room, from_code) =
        session_setup::joiner_config(&mut args.common, std::mem::take(&mut args.code), out)?;
    // After the prompt for the code: Ctrl-C there still ends the process at once.
    let interrupt = Interrupt::listen();
    let conn = tokio::select! {
        c = yakk_session::join(config, &room) => c.map_err(|e| session_setup::join_failure(e, from_code))?,
        () = interrupt.wait() => return Err(Failure::stopped("Stopped before connecting.").into()),
    };
    if !args.stdout {
        connected_event(out, &conn, "sender");
    }
    let stream = tokio::select! {
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
    let rep = Recording::new(reporter(out, args.stdout), out).asking(asking);
    let protocol = protocol(conn.version());
    let result = yakk_transfer::receive_for(protocol, stream, opts, &rep, &interrupt.stop()).await;
    let ended = Ended {
        side: Side::Receiver,
        rep: &rep,
        resumable: protocol.resumes()
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
