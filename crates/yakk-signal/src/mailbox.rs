//! How the room store reaches a socket: a mailbox's handle (its queue, with the byte budget
//! the sender side checks) and the reasons the server closes a socket for ([`Kick`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::store::{CloseReason, Mailbox};

/// Why the server closes a socket: close code and reason.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kick {
    pub code: CloseCode,
    pub reason: &'static str,
}

impl Kick {
    pub const IDLE: Kick = Kick {
        code: CloseCode::Normal,
        reason: "idle timeout: no message relayed for too long",
    };
    pub const LOBBY: Kick = Kick {
        code: CloseCode::Normal,
        reason: "lobby timeout: no room joined",
    };
    pub const LIFETIME: Kick = Kick {
        code: CloseCode::Normal,
        reason: "room lifetime exceeded",
    };
    pub const SLOW: Kick = Kick {
        code: CloseCode::Policy,
        reason: "too many unread messages: the client does not read its socket",
    };
    pub const TOO_BIG: Kick = Kick {
        code: CloseCode::Size,
        reason: "message too big",
    };
    pub const RATE: Kick = Kick {
        code: CloseCode::Policy,
        reason: "rate limited",
    };
    pub const FULL: Kick = Kick {
        code: CloseCode::Again,
        reason: "too many rooms",
    };
    pub const BAD_QUERY: Kick = Kick {
        code: CloseCode::Policy,
        reason: "bad request",
    };
    pub const PING: Kick = Kick {
        code: CloseCode::Away,
        reason: "ping timeout",
    };
    pub const SHUTDOWN: Kick = Kick {
        code: CloseCode::Away,
        reason: "server shutting down",
    };
    /// Draining an instance of a cluster: the client should reconnect (to any instance).
    pub const DRAIN: Kick = Kick {
        code: CloseCode::Restart,
        reason: "server restarting: reconnect to continue",
    };
    pub const RECLAIMED: Kick = Kick {
        code: CloseCode::Policy,
        reason: "the room's owner reconnected elsewhere",
    };
    pub const ROOM_LOST: Kick = Kick {
        code: CloseCode::Again,
        reason: "room lost: the signalling service restarted, start again",
    };
    pub const UNAVAILABLE: Kick = Kick {
        code: CloseCode::Again,
        reason: "signalling service unavailable, try again shortly",
    };
    pub const BAD_UTF8: Kick = Kick {
        code: CloseCode::Invalid,
        reason: "text frame is not UTF-8",
    };
}

pub(crate) struct MailboxShared {
    pub queued_bytes: AtomicUsize,
    pub kick: OnceLock<Kick>,
    pub notify: Notify,
}

/// How the registry reaches a mailbox's socket task.
#[derive(Clone)]
pub(crate) struct MailboxHandle {
    tx: mpsc::UnboundedSender<Bytes>,
    pub shared: Arc<MailboxShared>,
    /// Bytes that may wait in the queue.
    budget: usize,
}

enum Offer {
    Queued,
    Overflow,
    Gone,
}

impl MailboxHandle {
    pub fn new(budget: usize) -> (MailboxHandle, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(MailboxShared {
            queued_bytes: AtomicUsize::new(0),
            kick: OnceLock::new(),
            notify: Notify::new(),
        });
        (MailboxHandle { tx, shared, budget }, rx)
    }

    fn offer(&self, frame: Bytes) -> Offer {
        let budget = self.budget;
        let len = frame.len();
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > budget {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Offer::Overflow;
        }
        match self.tx.send(frame) {
            Ok(()) => Offer::Queued,
            Err(_) => Offer::Gone,
        }
    }

    /// Asks the socket task to close with this reason (the first reason wins).
    pub fn kick(&self, kick: Kick) {
        if self.shared.kick.set(kick).is_ok() {
            self.shared.notify.notify_one();
        }
    }
}

impl Mailbox for MailboxHandle {
    fn deliver(&self, frame: Bytes) -> bool {
        matches!(self.offer(frame), Offer::Queued)
    }

    fn close(&self, why: CloseReason) {
        self.kick(match why {
            CloseReason::Idle => Kick::IDLE,
            CloseReason::RoomLifetime => Kick::LIFETIME,
            CloseReason::SlowConsumer => Kick::SLOW,
            CloseReason::Reclaimed => Kick::RECLAIMED,
            CloseReason::RoomLost => Kick::ROOM_LOST,
        });
    }
}
