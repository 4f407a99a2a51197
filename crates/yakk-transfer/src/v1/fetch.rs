//! Fetching the one file a yakk/1 sender serves: the request, the response head, the body in
//! any of its three framings, and the safe writing shared with the yakk/2 receiver.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::head::{self, Body};
use super::{MAX_HEADERS, V1_PATH, http, read_head};
use crate::error::{Result, TransferError};
use crate::names::escape;
use crate::receive::{
    self, Destination, OfferEntrySummary, OfferSummary, ReceiveOptions, ReceiveSummary, Sink,
};
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
use crate::send::CHUNK;

/// A reader of the response body that yields decoded bytes.
struct BodyReader<R> {
    r: R,
    pending: Vec<u8>,
    pos: usize,
    end: usize,
    body: Body,
    /// Bytes left in the current chunk (chunked) or in the body (length).
    left: u64,
    finished: bool,
}

impl<R: AsyncRead + Unpin> BodyReader<R> {
    async fn fill(&mut self) -> Result<bool> {
        if self.pos < self.end {
            return Ok(true);
        }
        // Sized once; `end` marks what is valid, so no buffer is cleared again per read.
        if self.pending.len() < CHUNK {
            self.pending.resize(CHUNK, 0);
        }
        self.pos = 0;
        self.end = self
            .r
            .read(&mut self.pending)
            .await
            .map_err(TransferError::conn)?;
        Ok(self.end > 0)
    }

    async fn line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        loop {
            if !self.fill().await? {
                return Err(TransferError::PeerClosed);
            }
            let b = self.pending[self.pos];
            self.pos += 1;
            if b == b'\n' {
                break;
            }
            line.push(b);
            if line.len() > 4096 {
                return Err(http("chunk header longer than 4 KiB"));
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| http("bad chunk header"))
    }

    /// The next piece of the body into `out` (cleared); false at the end.
    async fn next(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        if self.finished {
            return Ok(false);
        }
        if let Body::Chunked = self.body
            && self.left == 0
        {
            let line = self.line().await?;
            self.left = head::chunk_size(&line)?;
            if self.left == 0 {
                // Trailers until the empty line.
                for _ in 0..MAX_HEADERS {
                    if self.line().await?.is_empty() {
                        self.finished = true;
                        return Ok(false);
                    }
                }
                return Err(http("too many trailers"));
            }
        }
        if let Body::Length(_) = self.body
            && self.left == 0
        {
            self.finished = true;
            return Ok(false);
        }
        if !self.fill().await? {
            return match self.body {
                Body::Close => {
                    self.finished = true;
                    Ok(false)
                }
                _ => Err(TransferError::PeerClosed),
            };
        }
        let avail = self.end - self.pos;
        let take = match self.body {
            Body::Close => avail,
            _ => (avail as u64).min(self.left) as usize,
        };
        out.extend_from_slice(&self.pending[self.pos..self.pos + take]);
        self.pos += take;
        if !matches!(self.body, Body::Close) {
            self.left -= take as u64;
        }
        if let Body::Chunked = self.body
            && self.left == 0
        {
            let l = self.line().await?;
            if !l.is_empty() {
                return Err(http("missing CRLF after a chunk"));
            }
        }
        Ok(true)
    }
}

/// Fetch the single file a yakk/1 sender serves on `stream`.
pub async fn fetch_http_v1<S>(
    stream: S,
    opts: ReceiveOptions,
    reporter: &dyn Reporter,
) -> Result<ReceiveSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let req = format!(
        "GET {V1_PATH} HTTP/1.1\r\nHost: yakk\r\nUser-Agent: yakk/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    wr.write_all(req.as_bytes())
        .await
        .map_err(TransferError::conn)?;
    wr.flush().await.map_err(TransferError::conn)?;
    let mut rd = rd;
    let (head, rest) = read_head(&mut rd).await?;
    let head::Response { name, body } = head::parse_response(&head)?;
    let size = if let Body::Length(n) = body {
        Some(n)
    } else {
        None
    };

    let summary_for_user = OfferSummary {
        entries: vec![OfferEntrySummary {
            name: escape(&name),
            size,
            is_dir: false,
        }],
        files: 1,
        folders: 0,
        total_bytes: size.unwrap_or(0),
        size_unknown: size.is_none(),
    };
    // Ask first, then look at the disk (as the yakk/2 receiver does).
    let policy = receive::Policy::of(&opts);
    if let Some(confirm) = opts.confirm {
        let yes = tokio::task::spawn_blocking(move || confirm(&summary_for_user))
            .await
            .map_err(|e| TransferError::io("asking for confirmation", std::io::Error::other(e)))?;
        if !yes {
            let _ = wr.shutdown().await;
            return Err(TransferError::Declined);
        }
    }
    let mut summary = ReceiveSummary::default();
    let (mut sink, target) = match opts.destination {
        Destination::Dir(out) => {
            // The partial file's stem (`.yakk-legacy-<hash>.part`) is kept as earlier releases
            // named it.
            let stem = format!("legacy-{}", &blake3::hash(name.as_bytes()).to_hex()[..32]);
            let (t, existing) = receive::plan_file(&out, &name, None, None, policy, &stem, false)?;
            if existing == receive::Existing::Conflict {
                return Err(TransferError::FileExists(escape(&name)));
            }
            receive::make_dirs(&out, &[])?;
            summary.paths.push(t.final_path.clone());
            (Sink::disk(), t)
        }
        Destination::Writer(w) => (
            Sink::writer(w),
            receive::FileTarget {
                shown: escape(&name),
                final_path: Default::default(),
                partial: Default::default(),
                offset: 0,
                keep_partial: false,
                expected: None,
            },
        ),
    };
    let started = Instant::now();
    reporter.start(&StartInfo {
        direction: Direction::Receive,
        files: 1,
        total_bytes: size,
        resumed_bytes: 0,
    });
    reporter.file_start(&name, size, 0);
    let shown = escape(&name);
    let mut body = BodyReader {
        r: rd,
        end: rest.len(),
        pending: rest,
        pos: 0,
        left: size.unwrap_or(0),
        body,
        finished: false,
    };
    let result = async {
        sink.begin(target).await?;
        let mut n = 0u64;
        loop {
            let mut buf = sink.buffer(0);
            if !body.next(&mut buf).await? {
                break;
            }
            n += buf.len() as u64;
            sink.data(buf).await?;
            reporter.progress(&Progress {
                name: &name,
                file_bytes: n,
                file_size: size,
                bytes: n,
                total_bytes: size,
            });
        }
        if let Some(s) = size
            && n != s
        {
            return Err(TransferError::SizeMismatch {
                name: shown.clone(),
                what: "less",
                declared: s,
            });
        }
        sink.end(None).await?;
        sink.finish().await?;
        Ok(n)
    }
    .await;
    let n = match result {
        Ok(n) => n,
        Err(e) => {
            let disk = sink.finish().await.err();
            return Err(match (e, disk) {
                (TransferError::PeerClosed, Some(d)) => d,
                (e, _) => e,
            });
        }
    };
    let _ = wr.shutdown().await;
    summary.files_received = 1;
    summary.bytes_received = n;
    reporter.file_done(&name, n);
    reporter.done(&DoneInfo {
        direction: Direction::Receive,
        files: 1,
        bytes_transferred: n,
        resumed_bytes: 0,
        elapsed: started.elapsed(),
    });
    Ok(summary)
}
