//! Stopping a transfer on request (the user pressed Ctrl-C).
//!
//! A [`Stop`] is handed to [`crate::send_until`] / [`crate::receive_until`]. When it fires, the
//! transfer stops at the next point where the stream is between frames, keeps what can be
//! resumed (partial files stay, a stream's partial file goes), tells the peer with an ERROR
//! whose text is [`crate::wire::STOPPED`] (the peer then reports
//! [`crate::TransferError::PeerStopped`], not a broken connection) and returns
//! [`crate::TransferError::Stopped`].

use tokio::sync::watch;

/// A request to stop, shared by clones; [`Stop::never`] never fires.
#[derive(Clone, Debug, Default)]
pub struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    /// A stop that never fires.
    pub fn never() -> Self {
        Stop(None)
    }

    /// A stop that fires once `rx` holds `true` (and stays fired).
    pub fn from_watch(rx: watch::Receiver<bool>) -> Self {
        Stop(Some(rx))
    }

    /// A stop and the function that fires it.
    pub fn new() -> (impl Fn() + Send + Sync + 'static, Stop) {
        let (tx, rx) = watch::channel(false);
        (
            move || {
                tx.send_replace(true);
            },
            Stop(Some(rx)),
        )
    }

    /// Whether it has fired.
    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once it has fired (never for [`Stop::never`], nor once the sender is gone
    /// without firing).
    pub async fn requested(&self) {
        if let Some(rx) = &self.0 {
            let mut rx = rx.clone();
            if rx.wait_for(|v| *v).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_and_stays_fired() {
        let (fire, stop) = Stop::new();
        assert!(!stop.is_requested());
        let waiting = tokio::spawn({
            let stop = stop.clone();
            async move { stop.requested().await }
        });
        fire();
        waiting.await.unwrap();
        assert!(stop.is_requested());
        stop.requested().await;
        let never = Stop::never();
        assert!(!never.is_requested());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), never.requested())
                .await
                .is_err()
        );
    }
}
