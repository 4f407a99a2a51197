//! One WebSocket: the task that creates, joins or reclaims a room for it, relays its messages
//! through the room store, writes what others relay to it, pings it, and closes it with a reason.
//!
//! A mailbox's incoming queue is an unbounded channel with a byte budget checked by the sender
//! side: a recipient that does not read while others write is disconnected as a slow consumer
//! once its queue holds [`Config::mailbox_queue_bytes`](crate::Config::mailbox_queue_bytes),
//! so memory per mailbox stays bounded and the writers are never blocked by it.
//!
//! The server's own messages (`YAKKMSG_ERROR` and the room replies) are only ever answers to
//! something the socket did; nothing is pushed to members on their own (a yakk/1 owner
//! treats any message from an unseen sender as a new joiner).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use yakk_wire::{Envelope, SERVER_ID, WireError, msg};

use crate::mailbox::{Kick, MailboxHandle};
use crate::metrics::Rejection;
use crate::ratelimit::ClientKey;
use crate::registry::{CreateError, CreateOptions, JoinError, MailboxId, OWNER_ID, RoomRef};
use crate::server::{MAX_ROOM_NAME, Shared};
use crate::store::{Created, Relayed, RoomStore};
use crate::upgrade::{Intent, IntentError};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Error texts the server sends as `YAKKMSG_ERROR` payloads.
pub mod errors {
    pub const NO_SUCH_ROOM: &str = "No such room";
    pub const ROOM_FULL: &str = "Room is full";
    pub const RATE_LIMITED: &str = "Too many requests, try again in a minute";
    pub const TOO_MANY_ROOMS: &str = "Too many rooms are open, try again later";
    pub const MALFORMED: &str = "Malformed message";
    pub const NOT_IN_ROOM: &str = "Not in a room: join one first";
    pub const ALREADY_IN_ROOM: &str = "Already in a room";
    pub const UNAVAILABLE: &str = "The signalling service is unavailable, try again shortly";
}

fn server_msg(kind: &str, payload: impl Into<String>) -> Envelope {
    Envelope::new(kind, payload, OWNER_ID, OWNER_ID)
}

enum Place {
    Lobby,
    Room { room: RoomRef, id: MailboxId },
}

struct Conn {
    shared: Arc<Shared>,
    ws: Ws,
    peer: SocketAddr,
    handle: MailboxHandle,
    place: Place,
    /// The host of the relay's `turns:` URL for this client, when the relay serves TLS.
    turns_host: Option<String>,
}

/// How a step ends the connection.
enum End {
    /// The client went away or the socket failed: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(Kick),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    ws: Ws,
    peer: SocketAddr,
    intent: Result<Intent, IntentError>,
    turns_host: Option<String>,
) {
    let (handle, mut rx) = MailboxHandle::new(shared.config.mailbox_queue_bytes);
    let lobby_deadline = tokio::time::Instant::now() + shared.config.lobby_timeout;
    let mut conn = Conn {
        shared,
        ws,
        peer,
        handle,
        place: Place::Lobby,
        turns_host,
    };
    let end = match conn.start(intent).await {
        Ok(()) => conn.relay_loop(&mut rx, lobby_deadline).await,
        Err(end) => end,
    };
    conn.leave().await;
    drop(rx);
    if let End::Close(kick) = end {
        conn.close(kick).await;
    }
}

impl Conn {
    async fn start(&mut self, intent: Result<Intent, IntentError>) -> Result<(), End> {
        match intent {
            Err(why) => {
                self.shared.metrics.reject(Rejection::BadRequest);
                self.reply(server_msg(msg::ERROR, why.to_string())).await?;
                Err(End::Close(Kick::BAD_QUERY))
            }
            Ok(Intent::Create(options)) => self.create(options).await,
            Ok(Intent::Join(name)) => self.join(&name).await,
            Ok(Intent::Reclaim { name, secret }) => self.reclaim(&name, &secret).await,
        }
    }

    async fn create(&mut self, options: CreateOptions) -> Result<(), End> {
        let client = ClientKey::from(self.peer.ip());
        let result = self
            .shared
            .store
            .create(self.handle.clone(), options, client, Instant::now())
            .await;
        let m = &self.shared.metrics;
        match result {
            Err(CreateError::RateLimited) => {
                m.reject(Rejection::RateLimited);
                tracing::debug!(peer = %self.peer, "room creation rate-limited");
                self.reply(server_msg(msg::ERROR, errors::RATE_LIMITED))
                    .await?;
                Err(End::Close(Kick::RATE))
            }
            Err(CreateError::TooManyRooms) => {
                m.reject(Rejection::TooManyRooms);
                tracing::warn!("refused a room: the limit of live rooms is reached");
                self.reply(server_msg(msg::ERROR, errors::TOO_MANY_ROOMS))
                    .await?;
                Err(End::Close(Kick::FULL))
            }
            Err(CreateError::Unavailable) => self.unavailable().await,
            Ok(created) => {
                m.rooms_created.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(room = %created.room.name, peer = %self.peer, "room created");
                self.owner_reply(created).await
            }
        }
    }

    /// `YAKKMSG_ROOMCREATED` for a room created or reclaimed, with the reclaim secret if the
    /// store hands one out.
    async fn owner_reply(&mut self, created: Created) -> Result<(), End> {
        let Created { room, reclaim } = created;
        let mut reply = Envelope::new(msg::ROOM_CREATED, room.name.clone(), SERVER_ID, OWNER_ID);
        reply.ice_servers = self.shared.config.ice.servers_for(
            &room.name,
            SystemTime::now(),
            self.turns_host.as_deref(),
        );
        reply.reclaim = reclaim;
        self.place = Place::Room { room, id: OWNER_ID };
        self.reply(reply).await
    }

    /// The store cannot be reached: say so, and close (the client should retry later).
    async fn unavailable(&mut self) -> Result<(), End> {
        tracing::debug!(peer = %self.peer, "refused: the room store is unavailable");
        self.reply(server_msg(msg::ERROR, errors::UNAVAILABLE))
            .await?;
        Err(End::Close(Kick::UNAVAILABLE))
    }

    async fn join(&mut self, name: &str) -> Result<(), End> {
        let result = match self.client_for(name) {
            Err(e) => Err(e),
            Ok(client) => {
                let handle = self.handle.clone();
                let now = Instant::now();
                self.shared.store.join(name, handle, client, now).await
            }
        };
        match result {
            Err(e) => self.join_refused(e).await,
            Ok((room, id)) => {
                self.shared.metrics.joins.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(room = %room.name, mailbox = id, peer = %self.peer, "joined");
                let mut reply = Envelope::new(msg::ROOM_JOINED, id.to_string(), OWNER_ID, id);
                reply.ice_servers = self.shared.config.ice.servers_for(
                    &room.name,
                    SystemTime::now(),
                    self.turns_host.as_deref(),
                );
                self.place = Place::Room { room, id };
                self.reply(reply).await
            }
        }
    }

    async fn reclaim(&mut self, name: &str, secret: &str) -> Result<(), End> {
        let result = match self.client_for(name) {
            Err(e) => Err(e),
            Ok(client) => {
                let (handle, store) = (self.handle.clone(), &self.shared.store);
                store
                    .reclaim(name, secret, handle, client, Instant::now())
                    .await
            }
        };
        match result {
            Err(e) => self.join_refused(e).await,
            Ok(created) => {
                tracing::debug!(room = %created.room.name, peer = %self.peer, "room reclaimed");
                self.owner_reply(created).await
            }
        }
    }

    /// The client's key for a join or reclaim of `name`; a name too long to exist is refused
    /// before the store is asked.
    fn client_for(&self, name: &str) -> Result<ClientKey, JoinError> {
        if name.len() > MAX_ROOM_NAME {
            return Err(JoinError::NoSuchRoom);
        }
        Ok(ClientKey::from(self.peer.ip()))
    }

    async fn join_refused(&mut self, e: JoinError) -> Result<(), End> {
        let m = &self.shared.metrics;
        let (why, text) = match e {
            JoinError::RateLimited => {
                m.reject(Rejection::RateLimited);
                tracing::debug!(peer = %self.peer, "join rate-limited");
                self.reply(server_msg(msg::ERROR, errors::RATE_LIMITED))
                    .await?;
                return Err(End::Close(Kick::RATE));
            }
            JoinError::Unavailable => return self.unavailable().await,
            JoinError::NoSuchRoom => (Rejection::NoSuchRoom, errors::NO_SUCH_ROOM),
            JoinError::RoomFull => (Rejection::RoomFull, errors::ROOM_FULL),
        };
        m.reject(why);
        tracing::debug!(peer = %self.peer, "join refused: {e}");
        // The socket stays open: the client may retry with YAKKMSG_JOINROOM.
        self.reply(server_msg(msg::ERROR, text)).await
    }

    /// Relays until the socket ends. A socket still in no room at `lobby_deadline` (its join
    /// was refused, and no retry succeeded) is closed then.
    async fn relay_loop(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Bytes>,
        lobby_deadline: tokio::time::Instant,
    ) -> End {
        let shared = self.shared.clone();
        let mailbox = self.handle.shared.clone();
        let config = &shared.config;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + config.ping_interval,
            config.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let in_lobby = matches!(self.place, Place::Lobby);
            let step = tokio::select! {
                biased;
                _ = mailbox.notify.notified() => {
                    return End::Close(mailbox.kick.get().copied().unwrap_or(Kick::SHUTDOWN));
                }
                _ = shared.shutdown.cancelled() => {
                    return End::Close(if shared.store.is_shared() { Kick::DRAIN } else { Kick::SHUTDOWN });
                }
                frame = rx.recv() => match frame {
                    Some(frame) => {
                        mailbox.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
                        self.send(Message::Binary(frame)).await
                    }
                    // The store dropped this mailbox; its kick is on the way.
                    None => Ok(()),
                },
                incoming = self.ws.next() => {
                    last_heard = Instant::now();
                    self.on_frame(incoming).await
                }
                _ = tokio::time::sleep_until(lobby_deadline), if in_lobby => {
                    shared.metrics.reject(Rejection::LobbyTimeout);
                    tracing::debug!(peer = %self.peer, "closing a socket that is in no room");
                    return End::Close(Kick::LOBBY);
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.ping_timeout {
                        shared.metrics.reject(Rejection::PingTimeout);
                        tracing::debug!(peer = %self.peer, "no answer to pings");
                        return End::Close(Kick::PING);
                    }
                    self.send(Message::Ping(Bytes::new())).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_frame(&mut self, incoming: Option<Result<Message, WsError>>) -> Result<(), End> {
        let bytes = match incoming {
            None => return Err(End::Gone),
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(()),
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; flush it.
                let _ = tokio::time::timeout(self.shared.config.send_timeout, self.ws.close(None))
                    .await;
                return Err(End::Gone);
            }
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                self.shared.metrics.reject(Rejection::MessageTooLarge);
                tracing::debug!(peer = %self.peer, size, max_size, "frame too large");
                return Err(End::Close(Kick::TOO_BIG));
            }
            Some(Err(WsError::Utf8(_))) => {
                self.shared.metrics.reject(Rejection::Malformed);
                return Err(End::Close(Kick::BAD_UTF8));
            }
            Some(Err(e)) => {
                tracing::debug!(peer = %self.peer, "socket ended: {e}");
                return Err(End::Gone);
            }
        };
        let envelope = match Envelope::parse(&bytes, self.shared.config.max_message_bytes) {
            Ok(e) => e,
            Err(WireError::TooLarge(..)) => {
                self.shared.metrics.reject(Rejection::MessageTooLarge);
                return Err(End::Close(Kick::TOO_BIG));
            }
            Err(WireError::Malformed(why)) => {
                self.shared.metrics.reject(Rejection::Malformed);
                tracing::debug!(peer = %self.peer, "malformed message: {why}");
                return self.reply(server_msg(msg::ERROR, errors::MALFORMED)).await;
            }
        };
        match (&self.place, envelope.msg_type.as_str()) {
            (Place::Lobby, msg::JOIN_ROOM) => self.join(&envelope.payload).await,
            (Place::Lobby, _) => {
                self.shared.metrics.reject(Rejection::NotInRoom);
                self.reply(server_msg(msg::ERROR, errors::NOT_IN_ROOM))
                    .await
            }
            (Place::Room { .. }, msg::JOIN_ROOM) => {
                self.shared.metrics.reject(Rejection::BadRequest);
                self.reply(server_msg(msg::ERROR, errors::ALREADY_IN_ROOM))
                    .await
            }
            (Place::Room { room, id }, _) => {
                let (room, id) = (room.clone(), *id);
                self.relay(&room, id, envelope).await
            }
        }
    }

    /// Hands a message to its recipient's queue. Never waits for the recipient: a full queue
    /// disconnects the recipient, not the sender.
    async fn relay(
        &mut self,
        room: &RoomRef,
        from: MailboxId,
        mut envelope: Envelope,
    ) -> Result<(), End> {
        // A mailbox speaks only as itself, and only the server advertises ICE servers.
        envelope.sender = from;
        envelope.ice_servers = None;
        envelope.reclaim = None;
        let recipient = envelope.recipient;
        let frame = Bytes::from(envelope.to_json());
        let len = frame.len() as u64;
        let m = &self.shared.metrics;
        let relayed = self
            .shared
            .store
            .relay(room, from, recipient, frame, Instant::now())
            .await;
        match relayed {
            Relayed::Delivered => {
                m.messages_relayed.fetch_add(1, Ordering::Relaxed);
                m.bytes_relayed.fetch_add(len, Ordering::Relaxed);
            }
            Relayed::UnknownRecipient => {
                m.dropped_unknown_recipient.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(room = %room.name, from, recipient, "no such recipient: dropped");
            }
            Relayed::SelfAddressed => {
                m.reject(Rejection::SelfAddressed);
                tracing::debug!(room = %room.name, from, "addressed to its sender: dropped");
            }
            Relayed::SlowConsumer => {
                m.reject(Rejection::SlowConsumer);
                tracing::debug!(room = %room.name, mailbox = recipient, "slow consumer disconnected");
            }
            // This mailbox was just evicted; its own kick closes it.
            Relayed::SenderGone => {}
            Relayed::Unavailable => return Err(End::Close(Kick::UNAVAILABLE)),
        }
        Ok(())
    }

    /// Sends one of the server's own messages.
    async fn reply(&mut self, envelope: Envelope) -> Result<(), End> {
        self.send(Message::Binary(Bytes::from(envelope.to_json())))
            .await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        let timeout = self.shared.config.send_timeout;
        let sent = tokio::select! {
            biased;
            _ = self.handle.shared.notify.notified() => {
                let kick = self.handle.shared.kick.get().copied().unwrap_or(Kick::SHUTDOWN);
                return Err(End::Close(kick));
            }
            r = tokio::time::timeout(timeout, self.ws.send(message)) => r,
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, "send failed: {e}");
                Err(End::Gone)
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "send timed out");
                Err(End::Gone)
            }
        }
    }

    async fn leave(&mut self) {
        if let Place::Room { room, id } = std::mem::replace(&mut self.place, Place::Lobby) {
            let left = self.shared.store.leave(&room, id, Instant::now()).await;
            if left {
                tracing::debug!(room = %room.name, mailbox = id, "left");
            }
        }
    }

    /// Sends a close frame, then lingers briefly, discarding input, so that the client reads
    /// the close frame before the TCP connection goes (closing a socket with unread input
    /// makes the kernel reset it, and the client could lose the close frame).
    async fn close(mut self, kick: Kick) {
        let frame = CloseFrame {
            code: kick.code,
            reason: kick.reason.into(),
        };
        let linger = std::time::Duration::from_secs(2);
        let _ = tokio::time::timeout(linger, self.ws.close(Some(frame))).await;
        let io = self.ws.get_mut();
        let _ = tokio::time::timeout(linger, async {
            let _ = io.shutdown().await;
            let mut buf = [0u8; 4096];
            let mut budget = 1usize << 20;
            while budget > 0 {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => budget = budget.saturating_sub(n),
                }
            }
        })
        .await;
    }
}
