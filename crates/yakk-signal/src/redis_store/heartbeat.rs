//! Liveness: the heartbeat that keeps this instance's mailboxes alive in Redis, the janitor
//! that walks every room, and the epoch that says whether Redis lost its data.

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::scripts::JANITOR_BATCH;
use super::{Inner, bounded, lock};
use crate::store::Mailbox;

impl<M: Mailbox> Inner<M> {
    /// One step of the janitor: the next batch of rooms in a `SCAN` over all of them; returns
    /// the cursor for the next step (0: a pass is complete).
    pub(super) async fn janitor(&self, cursor: u64) -> redis::RedisResult<u64> {
        let mut con = self.con.clone();
        let (next, keys): (u64, Vec<String>) = bounded(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("yakk:mb:*")
                .arg("COUNT")
                .arg(JANITOR_BATCH)
                .query_async(&mut con),
        )
        .await?;
        let names: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("yakk:mb:"))
            .collect();
        if !names.is_empty() {
            let mut inv = self.scripts.janitor.prepare_invoke();
            for n in names {
                inv.arg(n);
            }
            self.run::<i64>(inv).await?;
        }
        Ok(next)
    }

    pub(super) async fn heartbeat(&self) -> redis::RedisResult<String> {
        let candidate = format!("{:016x}", lock(&self.rng).random::<u64>());
        let ttl = (self.config.heartbeat * 3).as_millis() as u64;
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.arg(&self.instance).arg(ttl).arg(candidate);
        self.run(inv).await
    }
}

/// Keeps this instance alive in Redis and notices when Redis lost its data.
pub(super) async fn beat<M: Mailbox>(inner: std::sync::Weak<Inner<M>>, stop: CancellationToken) {
    let period = match inner.upgrade() {
        Some(i) => i.config.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.heartbeat().await {
            Ok(epoch) => {
                let changed = {
                    let mut known = lock(&inner.epoch);
                    let changed = *known != epoch;
                    *known = epoch;
                    changed
                };
                if changed {
                    inner.lose_everything();
                }
            }
            Err(e) => inner.failed("heartbeat", &e),
        }
        match inner.janitor(cursor).await {
            Ok(next) => cursor = next,
            Err(e) => {
                inner.failed("janitor", &e);
                cursor = 0;
            }
        }
    }
}
