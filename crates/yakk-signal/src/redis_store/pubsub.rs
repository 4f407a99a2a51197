//! Relay between instances: each instance subscribes to its own channel, `yakk:to:INSTANCE`,
//! where the scripts publish messages for its mailboxes and the news of a reclaimed room.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Inner, bounded};
use crate::registry::{MailboxId, OWNER_ID};
use crate::store::{CloseReason, Mailbox};

impl<M: Mailbox> Inner<M> {
    pub(super) async fn subscribe(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let channel = format!("yakk:to:{}", self.instance);
        let fut = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        };
        bounded(fut).await
    }

    /// One message from the instance channel.
    pub(super) async fn on_message(&self, payload: &[u8]) {
        let mut parts = payload.splitn(5, |b| *b == b'\n');
        let kind = parts.next().unwrap_or_default();
        fn text(p: Option<&[u8]>) -> Option<&str> {
            p.and_then(|b| std::str::from_utf8(b).ok())
        }
        match kind {
            b"m" => {
                let (Some(name), Some(to), Some(token), Some(frame)) = (
                    text(parts.next()),
                    text(parts.next()).and_then(|s| s.parse::<MailboxId>().ok()),
                    text(parts.next()),
                    parts.next(),
                ) else {
                    tracing::debug!("ignoring a malformed message from Redis");
                    return;
                };
                let frame = Bytes::copy_from_slice(frame);
                self.deliver_local(name, to, token, frame).await;
            }
            b"k" => {
                let (Some(name), Some(token)) = (text(parts.next()), text(parts.next())) else {
                    return;
                };
                if let Some(m) = self.remove_local(name, OWNER_ID, token) {
                    m.handle.close(CloseReason::Reclaimed);
                }
            }
            _ => tracing::debug!("ignoring an unknown message from Redis"),
        }
    }
}

/// Receives this instance's messages; resubscribes after Redis comes back.
pub(super) async fn listen<M: Mailbox>(
    inner: std::sync::Weak<Inner<M>>,
    first: redis::aio::PubSub,
    stop: CancellationToken,
) {
    let mut pubsub = Some(first);
    loop {
        if let Some(p) = pubsub.take() {
            let mut stream = p.into_on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = stream.next() => msg,
                };
                let Some(msg) = msg else { break };
                let Some(inner) = inner.upgrade() else { return };
                inner.on_message(msg.get_payload_bytes()).await;
            }
            tracing::warn!("lost the Redis subscription; reconnecting");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.subscribe().await {
            Ok(p) => {
                tracing::info!("subscribed to Redis again");
                pubsub = Some(p);
            }
            Err(e) => inner.failed("subscribe", &e),
        }
    }
}
