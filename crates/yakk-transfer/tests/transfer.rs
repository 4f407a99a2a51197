//! End-to-end yakk/2 transfers between our sender and receiver, over real loopback TCP sockets
//! and over in-memory duplex pipes.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use yakk_transfer::{
    Destination, JsonReporter, Manifest, NullReporter, ReceiveOptions, TransferError, receive, send,
};

async fn transfer<S1, S2>(
    a: S1,
    b: S2,
    m: &Manifest,
    opts: ReceiveOptions,
) -> (
    Result<yakk_transfer::SendSummary, TransferError>,
    Result<yakk_transfer::ReceiveSummary, TransferError>,
)
where
    S1: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S2: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::join!(send(a, m, &NullReporter), receive(b, opts, &NullReporter))
}

fn big_file(dir: &Path, mib: usize) -> std::path::PathBuf {
    let p = dir.join("big.bin");
    fs::write(&p, random_bytes(1, mib << 20)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_over_tcp() {
    bounded(120, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 100);
        let m = Manifest::scan(&[&p]).unwrap();
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        let (s, r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.bytes_sent, 100 << 20);
        assert_eq!(r.bytes_received, 100 << 20);
        let got = fs::read(dst.path().join("big.bin")).unwrap();
        assert_eq!(blake3::hash(&got), blake3::hash(&fs::read(&p).unwrap()));
        // No partial file left behind.
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_over_duplex() {
    bounded(120, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 100);
        let m = Manifest::scan(&[&p]).unwrap();
        let (a, b) = tokio::io::duplex(256 << 10);
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        s.unwrap();
        r.unwrap();
        let got = fs::read(dst.path().join("big.bin")).unwrap();
        assert_eq!(blake3::hash(&got), blake3::hash(&fs::read(&p).unwrap()));
    })
    .await
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("empty/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("фото/写真/صور")).unwrap();
    fs::write(root.join("фото/写真/صور/ملف.txt"), "مرحبا").unwrap();
    fs::write(root.join("фото/zero"), b"").unwrap();
    fs::write(root.join("zero.bin"), b"").unwrap();
    fs::write(root.join("emoji 🦀 name.md"), "crab").unwrap();
    fs::write(root.join(".hidden"), "h").unwrap();
    fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    fs::write(root.join("a/b/c/d/mid.bin"), random_bytes(3, 3_000_001)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_tree_over_tcp_and_duplex() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("tree");
        make_tree(&root);
        let single = src.path().join("single.txt");
        fs::write(&single, "one").unwrap();
        let m = Manifest::scan(&[&root, &single]).unwrap();
        for over_tcp in [true, false] {
            let dst = tempfile::tempdir().unwrap();
            let opts = ReceiveOptions::into_dir(dst.path().join("new/out"));
            let (s, r) = if over_tcp {
                let (a, b) = tcp_pair().await;
                transfer(a, b, &m, opts).await
            } else {
                let (a, b) = tokio::io::duplex(64 << 10);
                transfer(a, b, &m, opts).await
            };
            let r = r.unwrap();
            s.unwrap();
            let out = dst.path().join("new/out");
            assert_eq!(tree(&out.join("tree")), tree(&root));
            assert_eq!(fs::read(out.join("single.txt")).unwrap(), b"one");
            assert_eq!(r.paths, vec![out.join("tree"), out.join("single.txt")]);
            assert!(out.join("tree/empty/deeper/deepest").is_dir());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_are_pipelined() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("many");
        for d in 0..20 {
            fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
            for f in 0..100 {
                fs::write(root.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
            }
        }
        let m = Manifest::scan(&[&root]).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (a, b) = tcp_pair().await;
        let t = std::time::Instant::now();
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        assert_eq!(s.unwrap().files_sent, 2000);
        assert_eq!(r.unwrap().files_received, 2000);
        assert_eq!(tree(&dst.path().join("many")), tree(&root));
        eprintln!("2000 small files in {:?}", t.elapsed());
    })
    .await
}

/// Sender's socket breaks after `cut` bytes; the receiver keeps its partial file; a new sender
/// with the same scan finishes the file without sending those bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sender_socket_breaks() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 24);
        let m = Manifest::scan(&[&p]).unwrap();
        let size = 24u64 << 20;

        let (a, b) = tcp_pair().await;
        let cut = CutAfter {
            inner: a,
            left: 10 << 20,
        };
        let (s, r) = transfer(cut, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        assert!(s.is_err());
        assert!(matches!(r, Err(TransferError::PeerClosed)), "{:?}", r.err());
        assert!(!dst.path().join("big.bin").exists());
        let partial: Vec<_> = fs::read_dir(dst.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(partial.len(), 1);
        let held = fs::metadata(&partial[0]).unwrap().len();
        assert!(held > (10 << 20) - 4096 && held < 10 << 20, "held {held}");

        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        let (s, r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.resumed_bytes, held);
        assert_eq!(s.bytes_sent, size - held, "bytes were sent again");
        assert_eq!(r.bytes_received, size - held);
        assert_eq!(r.resumed_bytes, held);
        assert_eq!(
            fs::read(dst.path().join("big.bin")).unwrap(),
            fs::read(&p).unwrap()
        );
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);
    })
    .await
}

/// The sending task is killed (aborted) mid-file; a folder with a complete file and a partial one
/// resumes: the complete one is skipped, the partial one continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sender_task_killed() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let root = src.path().join("dir");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a_first"), random_bytes(5, 1 << 20)).unwrap();
        fs::write(root.join("b_second"), random_bytes(6, 40 << 20)).unwrap();
        let m = Arc::new(Manifest::scan(&[&root]).unwrap());

        let (a, b) = tokio::io::duplex(64 << 10);
        let m2 = m.clone();
        let sender = tokio::spawn(async move { send(a, &m2, &NullReporter).await });
        let rep = Arc::new(CountingReporter::default());
        let rep2 = rep.clone();
        let dst_path = dst.path().to_owned();
        let receiver =
            tokio::spawn(
                async move { receive(b, ReceiveOptions::into_dir(dst_path), &*rep2).await },
            );
        while rep.bytes.load(Ordering::SeqCst) < 12 << 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sender.abort();
        let r = receiver.await.unwrap();
        assert!(matches!(r, Err(TransferError::PeerClosed)), "{r:?}");
        // Files take their final names only when the whole transfer is complete: the first
        // file is held, complete, as a partial file (so the next run does not take it for a
        // file that was here before).
        assert!(!dst.path().join("dir/a_first").exists());
        assert!(!dst.path().join("dir/b_second").exists());
        let held: u64 = fs::read_dir(dst.path().join("dir"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(held >= (1 << 20) + (10 << 20), "held {held}");

        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        let (s, r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.files_skipped, 1);
        assert_eq!(r.files_skipped, 0);
        assert_eq!(r.files_received, 2);
        assert_eq!(s.bytes_sent, (41 << 20) - held, "bytes were sent again");
        assert_eq!(tree(&dst.path().join("dir")), tree(&root));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_file_into_a_folder_that_does_not_exist_yet() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(src.path().join("one.txt"), "only me").unwrap();
        let m = Manifest::scan(&[src.path().join("one.txt")]).unwrap();
        let out = dst.path().join("new/nested");
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(&out)).await;
        s.unwrap();
        r.unwrap();
        assert_eq!(fs::read(out.join("one.txt")).unwrap(), b"only me");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_writes_nothing_and_confirm_sees_escaped_names() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let root = src.path().join("d");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/evil\u{202e}gpj.exe"), "x").unwrap();
        fs::write(root.join("f"), "12345").unwrap();
        let m = Manifest::scan(&[&root]).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let opts = ReceiveOptions {
            destination: Destination::Dir(dst.path().join("out")),
            overwrite: false,
            skip_identical: false,
            confirm: Some(Box::new(move |s| {
                *seen2.lock().unwrap() = Some(s.clone());
                false
            })),
        };
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, opts).await;
        assert!(matches!(r, Err(TransferError::Declined)));
        assert!(matches!(s, Err(TransferError::PeerRefused(_))), "{s:?}");
        assert!(!dst.path().join("out").exists());
        let summary = seen.lock().unwrap().take().unwrap();
        assert_eq!(summary.files, 2);
        assert_eq!(summary.folders, 2);
        assert_eq!(summary.total_bytes, 6);
        let text = summary.to_string();
        assert!(text.contains("evil\\u{202e}gpj.exe"), "{text}");
        assert!(!text.contains('\u{202e}'));
    })
    .await
}

/// The person is asked before the receiver looks at its disk: a file in the way does not keep
/// the question from being asked (nor does it answer the sender before the person does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_comes_before_the_disk() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = src.path().join("notes.txt");
        fs::write(&p, "theirs").unwrap();
        fs::write(dst.path().join("notes.txt"), "mine").unwrap();
        let m = Manifest::scan(&[&p]).unwrap();
        for answer in [false, true] {
            let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let asked2 = asked.clone();
            let mut opts = ReceiveOptions::into_dir(dst.path());
            opts.confirm = Some(Box::new(move |_| {
                asked2.store(true, Ordering::SeqCst);
                answer
            }));
            let (a, b) = tokio::io::duplex(1 << 16);
            let (s, r) = transfer(a, b, &m, opts).await;
            assert!(asked.load(Ordering::SeqCst), "asked first");
            if answer {
                assert!(matches!(r, Err(TransferError::FileExists(_))), "{r:?}");
            } else {
                assert!(matches!(r, Err(TransferError::Declined)), "{r:?}");
            }
            // Either way the sender reads the same refusal.
            assert_eq!(
                s.unwrap_err().to_string(),
                "the receiver declined the transfer"
            );
            assert_eq!(fs::read(dst.path().join("notes.txt")).unwrap(), b"mine");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_files_need_overwrite() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = src.path().join("photo.jpg");
        fs::write(&p, "new content").unwrap();
        fs::write(dst.path().join("photo.jpg"), "old").unwrap();
        let m = Manifest::scan(&[&p]).unwrap();

        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("already here: photo.jpg; nothing was received (--overwrite"),
            "{e}"
        );
        let s = s.unwrap_err();
        assert_eq!(s.to_string(), "the receiver declined the transfer");
        assert_eq!(fs::read(dst.path().join("photo.jpg")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);

        let (a, b) = tokio::io::duplex(1 << 16);
        let mut opts = ReceiveOptions::into_dir(dst.path());
        opts.overwrite = true;
        let (s, r) = transfer(a, b, &m, opts).await;
        s.unwrap();
        r.unwrap();
        assert_eq!(
            fs::read(dst.path().join("photo.jpg")).unwrap(),
            b"new content"
        );

        // The same content already there: like any existing file, unless the receiver opts
        // in to keeping identical files (then skipped, nothing sent).
        let (a, b) = tokio::io::duplex(1 << 16);
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        assert!(matches!(r, Err(TransferError::FileExists(_))), "{r:?}");
        assert!(matches!(s, Err(TransferError::PeerRefused(_))), "{s:?}");
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut opts = ReceiveOptions::into_dir(dst.path());
        opts.skip_identical = true;
        let (s, r) = transfer(a, b, &m, opts).await;
        assert_eq!(s.unwrap().bytes_sent, 0);
        assert_eq!(r.unwrap().files_skipped, 1);
        // Every file in the way is named in the one message.
        let many = tempfile::tempdir().unwrap();
        for i in 0..8 {
            fs::write(src.path().join(format!("f{i}")), "new").unwrap();
            fs::write(dst.path().join(format!("f{i}")), "old").unwrap();
        }
        let paths: Vec<_> = (0..8).map(|i| src.path().join(format!("f{i}"))).collect();
        let m8 = Manifest::scan(&paths).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let (_, r) = transfer(a, b, &m8, ReceiveOptions::into_dir(dst.path())).await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("already here: f0, f1, f2, f3, f4 and 3 more;"),
            "{e}"
        );
        drop(many);

        // A folder where the file should go.
        let dst2 = tempfile::tempdir().unwrap();
        fs::create_dir(dst2.path().join("photo.jpg")).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut opts = ReceiveOptions::into_dir(dst2.path());
        opts.overwrite = true;
        let (_, r) = transfer(a, b, &m, opts).await;
        assert!(matches!(r, Err(TransferError::ExistsAsFolder(_))), "{r:?}");
    })
    .await
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_in_the_target_are_not_followed() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let root = src.path().join("sub");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("x"), "payload").unwrap();
        fs::write(src.path().join("victim"), "payload").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dst.path().join("sub")).unwrap();
        fs::write(elsewhere.path().join("victim"), "precious").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("victim"), dst.path().join("victim"))
            .unwrap();
        for p in [&root, &src.path().join("victim")] {
            let m = Manifest::scan(&[p]).unwrap();
            let (a, b) = tokio::io::duplex(1 << 16);
            let mut opts = ReceiveOptions::into_dir(dst.path());
            opts.overwrite = true;
            let (_, r) = transfer(a, b, &m, opts).await;
            assert!(matches!(r, Err(TransferError::Symlink(_))), "{r:?}");
        }
        assert_eq!(tree(elsewhere.path()).len(), 1);
        assert_eq!(
            fs::read(elsewhere.path().join("victim")).unwrap(),
            b"precious"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_mode_and_stdin_stream() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("f.bin");
        let data = random_bytes(9, 3 << 20);
        fs::write(&p, &data).unwrap();
        let m = Manifest::scan(&[&p]).unwrap();
        let out = SharedBuf::default();
        let opts = ReceiveOptions {
            destination: Destination::Writer(Box::new(out.clone())),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        };
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, opts).await;
        s.unwrap();
        assert!(r.unwrap().paths.is_empty());
        assert_eq!(*out.0.lock().unwrap(), data);

        // A stream (what `-` gives) into stdout, and into a folder.
        let m = Manifest::from_reader("stdin", Box::new(std::io::Cursor::new(data.clone())));
        let out = SharedBuf::default();
        let opts = ReceiveOptions {
            destination: Destination::Writer(Box::new(out.clone())),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        };
        let (a, b) = tokio::io::duplex(1 << 16);
        let (s, r) = transfer(a, b, &m, opts).await;
        assert_eq!(s.unwrap().bytes_sent, data.len() as u64);
        r.unwrap();
        assert_eq!(*out.0.lock().unwrap(), data);
        // Standard input can be read once only.
        let dst = tempfile::tempdir().unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let (s, _) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        assert!(matches!(s, Err(TransferError::StdinConsumed)), "{s:?}");

        let m = Manifest::from_reader("piped.txt", Box::new(&b"hello stdin"[..]));
        let (a, b) = tokio::io::duplex(1 << 16);
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        s.unwrap();
        r.unwrap();
        assert_eq!(
            fs::read(dst.path().join("piped.txt")).unwrap(),
            b"hello stdin"
        );
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);

        // A folder cannot go to stdout.
        let m = Manifest::scan(&[src.path()]).unwrap();
        let opts = ReceiveOptions {
            destination: Destination::Writer(Box::new(SharedBuf::default())),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        };
        let (a, b) = tokio::io::duplex(1 << 16);
        let (s, r) = transfer(a, b, &m, opts).await;
        let e = r.unwrap_err();
        assert!(matches!(e, TransferError::StdoutSingleFile(_)), "{e:?}");
        // Counted as the sender counts (it said "2 entries" for one file in one folder).
        assert_eq!(m.summary().headline(), "1 file(s) in 1 folder(s), 3.00 MiB");
        assert!(
            e.to_string()
                .contains("the sender offers 1 file(s) in 1 folder(s), 3.00 MiB"),
            "{e}"
        );
        assert_eq!(
            s.unwrap_err().to_string(),
            "the receiver declined the transfer"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_progress_events() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 4);
        let m = Manifest::scan(&[&p]).unwrap();
        let rep = JsonReporter::new(Vec::new(), Duration::ZERO);
        let (a, b) = tcp_pair().await;
        let (s, r) = tokio::join!(
            send(a, &m, &NullReporter),
            receive(b, ReceiveOptions::into_dir(dst.path()), &rep)
        );
        s.unwrap();
        r.unwrap();
        let out = String::from_utf8(rep.into_inner()).unwrap();
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0]["event"], "start");
        assert!(events.iter().any(|e| e["event"] == "progress"
            && e["total_bytes"] == 4 << 20
            && e["rate_bytes_per_sec"].is_number()));
        let last = events.last().unwrap();
        assert_eq!(last["event"], "done");
        assert_eq!(last["bytes"], 4 << 20);
    })
    .await
}

/// Disk full on a real 1 MiB tmpfs: a clear error, and the partial data is kept for resume.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_partial_data() {
    bounded(60, async {
        let mnt = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(mnt.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var_os("YAKK_CI").is_none(),
                "disk_full_keeps_partial_data cannot mount a tmpfs, and YAKK_CI is set"
            );
            eprintln!("SKIPPED disk_full_keeps_partial_data: cannot mount a tmpfs (not root?)");
            return;
        }
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _guard = Unmount(mnt.path().to_owned());
        let src = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 3);
        let m = Manifest::scan(&[&p]).unwrap();
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(mnt.path())).await;
        let e = r.unwrap_err();
        assert!(matches!(e, TransferError::DiskFull(_)), "{e:?}");
        assert!(e.to_string().contains("partial data kept"), "{e}");
        assert!(matches!(s, Err(TransferError::PeerError(_))), "{s:?}");
        let parts: Vec<u64> = fs::read_dir(mnt.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        assert_eq!(parts.len(), 1);
        let held = parts[0];
        assert!(held > 0);

        // Space is freed (the file system grows): the same command resumes.
        let grown = std::process::Command::new("mount")
            .args(["-o", "remount,size=8m"])
            .arg(mnt.path())
            .status()
            .unwrap();
        assert!(grown.success());
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(mnt.path())).await;
        assert_eq!(s.unwrap().bytes_sent, (3 << 20) - held);
        assert_eq!(r.unwrap().resumed_bytes, held);
        assert_eq!(
            fs::read(mnt.path().join("big.bin")).unwrap(),
            fs::read(&p).unwrap()
        );

        // A read-only file system: permission denied, said plainly.
        let ro = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(mnt.path())
            .status()
            .unwrap();
        assert!(ro.success());
        let q = src.path().join("other.bin");
        fs::write(&q, b"x").unwrap();
        let m = Manifest::scan(&[&q]).unwrap();
        let (a, b) = tcp_pair().await;
        let (_, r) = transfer(a, b, &m, ReceiveOptions::into_dir(mnt.path())).await;
        let e = r.unwrap_err();
        assert!(matches!(e, TransferError::PermissionDenied(_)), "{e:?}");
    })
    .await
}

/// The receiving task is killed mid-file; the next receive resumes from what reached the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_receiver_killed() {
    bounded(60, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = big_file(src.path(), 32);
        let m = Arc::new(Manifest::scan(&[&p]).unwrap());
        let (a, b) = tokio::io::duplex(64 << 10);
        let m2 = m.clone();
        let sender = tokio::spawn(async move { send(a, &m2, &NullReporter).await });
        let rep = Arc::new(CountingReporter::default());
        let rep2 = rep.clone();
        let dst_path = dst.path().to_owned();
        let receiver =
            tokio::spawn(
                async move { receive(b, ReceiveOptions::into_dir(dst_path), &*rep2).await },
            );
        while rep.bytes.load(Ordering::SeqCst) < 8 << 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        receiver.abort();
        assert!(sender.await.unwrap().is_err());
        // In a real kill the process is gone; here the writer thread drains its queue first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held: u64 = fs::read_dir(dst.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(held >= 8 << 20, "held {held}");

        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        assert_eq!(s.unwrap().bytes_sent, (32 << 20) - held);
        assert_eq!(r.unwrap().resumed_bytes, held);
        assert_eq!(
            fs::read(dst.path().join("big.bin")).unwrap(),
            fs::read(&p).unwrap()
        );
    })
    .await
}

/// A file that changes after the scan is not sent as if it were the scanned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_source_stops_the_sender() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = src.path().join("f.txt");
        fs::write(&p, "version one").unwrap();
        let m = Manifest::scan(&[&p]).unwrap();
        fs::write(&p, "version two, longer").unwrap();
        let (a, b) = tcp_pair().await;
        let (s, r) = transfer(a, b, &m, ReceiveOptions::into_dir(dst.path())).await;
        let e = s.unwrap_err();
        assert!(matches!(e, TransferError::SourceChanged(_)), "{e:?}");
        assert!(e.to_string().contains("run yakk filesend again"));
        assert!(matches!(r, Err(TransferError::PeerError(_))), "{r:?}");
        assert!(!dst.path().join("f.txt").exists());
    })
    .await
}

/// A pipe where a file should go is never opened (reading it would block forever).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_file_at_the_target_is_refused() {
    bounded(30, async {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = src.path().join("empty");
        fs::write(&p, b"").unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dst.path().join("empty"))
            .status();
        if !made.is_ok_and(|s| s.success()) {
            assert!(
                std::env::var_os("YAKK_CI").is_none(),
                "special_file_at_the_target_is_refused has no mkfifo, and YAKK_CI is set"
            );
            eprintln!("SKIPPED special_file_at_the_target_is_refused: no mkfifo");
            return;
        }
        let m = Manifest::scan(&[&p]).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut opts = ReceiveOptions::into_dir(dst.path());
        opts.overwrite = true;
        let (s, r) = transfer(a, b, &m, opts).await;
        let e = r.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(s.is_err());
    })
    .await
}

/// `check_destination`, which the receiving command runs before it connects: a folder or
/// nothing yet is fine; a file there, or a file where a parent folder should be, is not.
#[test]
fn the_destination_is_checked_before_anything_is_received() {
    let dir = tempfile::tempdir().unwrap();
    assert!(yakk_transfer::check_destination(dir.path()).is_ok());
    assert!(yakk_transfer::check_destination(&dir.path().join("later")).is_ok());
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        yakk_transfer::check_destination(&file),
        Err(yakk_transfer::TransferError::NotAFolder(_))
    ));
    assert!(yakk_transfer::check_destination(&file.join("below")).is_err());
}
