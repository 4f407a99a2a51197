//! Serving a yakk/1 receiver: one HTTP request per stream, and a receiver may open several (the
//! original program's downloader asks `HEAD`, then `GET` on a new stream).

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use super::{V1Served, serve_http_v1};
use crate::error::{Result, TransferError};
use crate::manifest::Manifest;
use crate::protocol::{linger, peer_may_listen};
use crate::report::Reporter;
use crate::send::SendSummary;

/// Serves `first` and every stream `accept` hands out, each on its own, until a `GET` has
/// carried the file to its end (a range that stops short does not end the session); a request that fails is reported ([`Reporter::request_failed`]) and does
/// not end the session. Once the receiver is gone (`accept` gives `None`), the requests in
/// flight still finish: a GET that carried the whole file counts even if the receiver left
/// while we lingered.
pub(crate) async fn serve_streams<S, A, F>(
    first: S,
    mut accept: A,
    manifest: &Arc<Manifest>,
    reporter: &Arc<dyn Reporter>,
) -> Result<SendSummary>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = Option<S>>,
{
    let mut serving = JoinSet::new();
    let serve = |serving: &mut JoinSet<Result<V1Served>>, mut stream: S| {
        let (manifest, reporter) = (manifest.clone(), reporter.clone());
        serving.spawn(async move {
            let result = serve_http_v1(&mut stream, &manifest, &*reporter).await;
            if peer_may_listen(&result) {
                linger(&mut stream).await;
            }
            result
        });
    };
    serve(&mut serving, first);
    let mut gone = false;
    loop {
        if gone && serving.is_empty() {
            return Err(TransferError::PeerClosed);
        }
        tokio::select! {
            done = serving.join_next(), if !serving.is_empty() => {
                let failed = match done {
                    Some(Ok(Ok(V1Served::File(summary)))) => return Ok(summary),
                    Some(Ok(Ok(V1Served::Head | V1Served::Part(_)))) | None => continue,
                    Some(Ok(Err(e))) => e.to_string(),
                    Some(Err(e)) => format!("the request's task failed: {e}"),
                };
                reporter.request_failed(&failed);
            }
            s = accept(), if !gone => match s {
                Some(stream) => serve(&mut serving, stream),
                None => gone = true,
            },
        }
    }
}
