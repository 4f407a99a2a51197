//! The handshake's message input after the key is agreed: an owner or a joiner, yakk/2 or
//! yakk/1, built past its key exchange (`Handshake::confirmed`, feature `fuzzing`) so that no
//! execution spends time on J-PAKE, is fed envelopes a hostile signalling server could send:
//! plain messages of any name, sealed-looking payloads of any bytes, and payloads the target
//! seals itself under the agreed key (any plaintext, or an offer, answer or candidate built
//! from the input), delivered as they are or tampered with, re-labelled, dropped or replayed;
//! between them the handshake seals descriptions and candidates of its own.
//!
//! Properties: no panic (every failure is a `HandshakeError`); a message gets past the seal
//! exactly when it opens on a reference channel under the agreed key (yakk/2: at the counter
//! due, bound to its header; yakk/1: `sealed::open_v1`), so nothing that was not sealed under
//! the key is accepted, and nothing that was is refused as unauthentic; only a message that
//! opened yields an instruction for the peer connection; what the handshake seals opens on
//! the peer's side.
//!
//! The reference decides, not a list of what this execution sealed: the keys are the same in
//! every execution, so a payload sealed in one (which libFuzzer may pick up from a comparison
//! and put in a later input) is still sealed under the key in the next.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use yakk_session::MAX_LANES;
use yakk_session::handshake::{
    Action, Handshake, HandshakeError, KNOWN, Keys, Params, Role, Version, msg2,
};
use yakk_session::sealed::{self, Header, SealError, SealedChannel};
use yakk_wire::{Envelope, IceCandidate, msg};
use zeroize::Zeroizing;

/// The handshake seals under `A` and opens under `B` (yakk/1: `A` both ways).
const A: [u8; 32] = [0x5a; 32];
const B: [u8; 32] = [0xa5; 32];
const ROOM: &str = "417";
/// Steps an input takes at most: enough for every state (32 lanes described from both sides
/// take fewer), and it keeps the long inputs of `-max_len=4096` from making every execution
/// slow (the time of an execution grows with its steps).
const STEPS: usize = 80;

/// The bytes of one input, taken from the front; every read past the end gives `None`.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A length byte, then that many bytes (fewer at the end).
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.byte()?).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(c)
    }

    fn text(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.chunk()?).into_owned())
    }

    /// A lane number: mostly small, sometimes at the edge of `u32`.
    fn lane(&mut self) -> Option<u32> {
        let b = self.byte()?;
        Some(if b >= 0xf0 {
            u32::MAX - u32::from(b & 0x0f)
        } else {
            u32::from(b % 36)
        })
    }
}

/// A plain message: any name the handshake knows, the opening ones, or one it does not.
fn name(i: u8) -> &'static str {
    let extra = [msg::REQUEST_OFFER, msg::CONNECTED, "YAKK3_FUTURE"];
    let i = usize::from(i) % (KNOWN.len() + extra.len());
    KNOWN
        .get(i)
        .copied()
        .unwrap_or_else(|| extra[i - KNOWN.len()])
}

/// The name a sealed message of `version` travels under (yakk/1: the input's choice of three).
fn sealed_name(version: Version, i: u8) -> &'static str {
    match version {
        Version::V2 => msg2::SEALED,
        Version::V1 => [msg::OFFER, msg::ANSWER, msg::NEW_ICE_CANDIDATE][usize::from(i) % 3],
    }
}

fn candidate(input: &mut Input) -> Option<IceCandidate> {
    let flags = input.byte()?;
    Some(IceCandidate {
        candidate: input.text()?,
        sdp_mid: (flags & 1 == 1).then(|| "0".into()),
        sdp_mline_index: (flags & 2 == 2).then_some(u16::from(flags >> 4)),
        username_fragment: (flags & 4 == 4).then(|| "frag".into()),
    })
}

/// An offer, answer or candidate in the plaintext form of `version`, from the input.
fn structured(version: Version, input: &mut Input) -> Option<Vec<u8>> {
    let flags = input.byte()?;
    let kind = ["offer", "answer", "candidate"][usize::from(flags % 3)];
    let mut m = if kind == "candidate" {
        let c = serde_json::to_value(candidate(input)?).ok()?;
        match version {
            Version::V1 => c,
            Version::V2 => json!({ "candidate": c }),
        }
    } else {
        json!({ "sdp": input.text()? })
    };
    m["type"] = Value::from(kind);
    match version {
        Version::V1 => {
            let versions = [["yakk/2"].as_slice(), &["yakk/1"], &["yakk/2", "yakk/1"]];
            if let Some(v) = versions.get(usize::from(flags >> 6)) {
                m["versions"] = json!(v);
            }
        }
        Version::V2 => {
            if flags & 0x08 != 0 {
                m["lane"] = Value::from(input.lane()?);
            }
            if flags & 0x10 != 0 && kind != "candidate" {
                m["lanes"] = Value::from(input.lane()?);
            }
            if flags & 0x20 != 0 && kind != "candidate" {
                m["features"] = json!(["window", "unknown"][..usize::from(flags >> 6) % 3]);
            }
        }
    }
    serde_json::to_vec(&m).ok()
}

/// The peer's end: seals as the handshake's peer would, and judges what should open.
struct Peer {
    version: Version,
    /// The handshake's id and its peer's.
    me: i64,
    them: i64,
    /// yakk/2: the peer's channel to the handshake (it seals under `B`).
    to_them: SealedChannel,
    /// yakk/2: the peer's channel from the handshake (it opens under `A`).
    from_them: SealedChannel,
    /// yakk/2: the reference, which opens under `B` what the handshake should open.
    reference: SealedChannel,
    /// yakk/2: how many sealed messages the handshake has opened, i.e. the counter it expects.
    opened: usize,
    /// The last envelope delivered in a sealed message's place, for replays.
    last: Option<Envelope>,
}

impl Peer {
    fn new(version: Version, role: Role) -> Self {
        // The owner is 0, the joiner 1.
        let me = i64::from(role == Role::Joiner);
        let them = 1 - me;
        Peer {
            version,
            me,
            them,
            to_them: SealedChannel::new(&B, &A),
            from_them: SealedChannel::new(&B, &A),
            reference: SealedChannel::new(&A, &B),
            opened: 0,
            last: None,
        }
    }

    fn header(msg_type: &'static str, sender: i64, recipient: i64) -> Header<'static> {
        Header {
            msg_type,
            room: ROOM,
            sender,
            recipient,
        }
    }

    /// An envelope from the peer to the handshake.
    fn envelope(&self, msg_type: &str, payload: String) -> Envelope {
        Envelope::new(msg_type, payload, self.them, self.me)
    }

    /// Seals `plain` for the handshake; `wrong` other than 0 (yakk/2: a header field; yakk/1:
    /// the key) spoils it.
    fn seal(&mut self, plain: &[u8], wrong: u8) -> String {
        match self.version {
            Version::V2 => {
                let mut h = Peer::header(msg2::SEALED, self.them, self.me);
                match wrong {
                    0 => {}
                    1 => h.room = "418",
                    2 => h.sender = self.me,
                    3 => h.recipient = self.them,
                    _ => h.msg_type = msg2::CONFIRM,
                }
                self.to_them.seal(h, plain).unwrap()
            }
            Version::V1 => sealed::seal_v1(if wrong == 0 { &A } else { &B }, plain).unwrap(),
        }
    }

    /// yakk/2: after a dropped or spoiled message the handshake waits for a counter the peer
    /// has passed; a new channel at that counter lets the input go on past the seal.
    fn resync(&mut self) {
        self.to_them = SealedChannel::new(&B, &A);
        for _ in 0..self.opened {
            let h = Peer::header(msg2::SEALED, self.them, self.me);
            self.to_them.seal(h, b"never sent").unwrap();
        }
    }

    /// Checks what the handshake sends: messages that open on the peer's side, in order.
    fn check_sent(&mut self, acts: &[Action]) {
        for a in acts {
            let Action::Send(e) = a else {
                panic!("only envelopes come out of a local event: {a:?}");
            };
            assert_eq!((e.sender, e.recipient), (self.me, self.them));
            match self.version {
                Version::V2 => {
                    assert_eq!(e.msg_type, msg2::SEALED);
                    let h = Peer::header(msg2::SEALED, self.me, self.them);
                    self.from_them.open(h, &e.payload).unwrap();
                }
                Version::V1 => {
                    sealed::open_v1(&A, &e.payload).unwrap();
                }
            }
        }
    }

    /// Delivers `env` to `h` and checks what came of it.
    fn deliver(&mut self, h: &mut Handshake, env: Envelope) {
        let t = env.msg_type.as_str();
        let reaches_seal = match self.version {
            Version::V2 => t == msg2::SEALED,
            Version::V1 => matches!(t, msg::OFFER | msg::ANSWER | msg::NEW_ICE_CANDIDATE),
        };
        // Whether it should open: on the reference, which (yakk/2) moves on to the next
        // counter only when it does.
        let authentic = reaches_seal
            && match self.version {
                Version::V2 => {
                    let h = Peer::header(msg2::SEALED, self.them, self.me);
                    self.reference.open(h, &env.payload).is_ok()
                }
                Version::V1 => sealed::open_v1(&A, &env.payload).is_ok(),
            };
        let got = h.on_message(&env);
        let opened = reaches_seal && !matches!(got, Err(HandshakeError::Sealed(_)));
        assert_eq!(opened, authentic, "{t}: {got:?}");
        if opened {
            self.opened += 1;
        }
        match got {
            Ok(acts) => {
                // Nothing is sent in answer to a message once the key is agreed, and only a
                // message that opened tells the peer connection anything.
                for a in &acts {
                    assert!(opened && !matches!(a, Action::Send(_)), "{t}: {a:?}");
                }
            }
            Err(e) => {
                let _ = e.to_string();
                if let Some(notice) = h.abort_notice(&e) {
                    assert_eq!(notice.msg_type, msg2::ABORT, "{e:?}");
                }
                assert!(
                    !matches!(e, HandshakeError::Sealed(SealError::Seal(_))),
                    "opening never seals: {e:?}"
                );
            }
        }
        if reaches_seal {
            self.last = Some(env);
        }
    }
}

/// `payload`'s bytes spoiled: one bit flipped (`how` even) or cut short, at `at`.
fn spoil(payload: &str, how: u8, at: u8) -> String {
    let mut raw = B64.decode(payload).unwrap();
    let i = usize::from(at) % raw.len();
    if how.is_multiple_of(2) {
        raw[i] ^= 1 << (how / 2 % 8);
    } else {
        raw.truncate(i);
    }
    B64.encode(raw)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(flags), Some(lanes), Some(cap)) = (input.byte(), input.byte(), input.byte()) else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Owner
    } else {
        Role::Joiner
    };
    let version = if flags & 2 == 0 {
        Version::V2
    } else {
        Version::V1
    };
    let mut peer = Peer::new(version, role);
    let p = Params {
        role,
        room: ROOM.into(),
        my_id: peer.me,
        peer_id: peer.them,
        password: Zeroizing::new(String::new()),
        allow_v1: flags & 4 != 0,
        v1_only: flags & 8 != 0 && version == Version::V1,
        lanes: u32::from(lanes % 40),
        lanes_cap: u32::from(cap % 40),
        admission: None,
    };
    let keys = match version {
        Version::V2 => Keys::V2 {
            send: Zeroizing::new(A),
            recv: Zeroizing::new(B),
        },
        Version::V1 => Keys::V1(Zeroizing::new(A)),
    };
    let mut h = Handshake::confirmed(p, keys);
    // Each step: an operation byte, then what it reads; at most `STEPS` of them.
    for _ in 0..STEPS {
        let Some(op) = input.byte() else { break };
        let done = step(op, &mut input, &mut peer, &mut h);
        assert!(h.is_confirmed() && h.version() == Some(version));
        assert!((1..=MAX_LANES).contains(&h.lanes()), "{}", h.lanes());
        let _ = h.agreed("window");
        if done.is_none() {
            break;
        }
    }
});

/// One step of an input; `None` once the input ran out.
fn step(op: u8, input: &mut Input, peer: &mut Peer, h: &mut Handshake) -> Option<()> {
    let version = peer.version;
    match op % 8 {
        // A plain message of any name.
        0 => {
            let name = name(input.byte()?);
            let env = peer.envelope(name, input.text()?);
            peer.deliver(h, env);
        }
        // The input's bytes where a sealed message goes.
        1 => {
            let name = sealed_name(version, input.byte()?);
            let env = peer.envelope(name, B64.encode(input.chunk()?));
            peer.deliver(h, env);
        }
        // Sealed under the key: the input's bytes, or a message built from them.
        2 | 3 => {
            let name = sealed_name(version, input.byte()?);
            let plain = match op % 8 {
                2 => input.chunk()?.to_vec(),
                _ => structured(version, input)?,
            };
            let payload = peer.seal(&plain, 0);
            peer.deliver(h, peer.envelope(name, payload));
        }
        // Sealed for another header or key, spoiled, or dropped on the way.
        4 => {
            let (name, how, at) = (input.byte()?, input.byte()?, input.byte()?);
            let plain = structured(version, input)?;
            let mut payload = peer.seal(&plain, how % 5);
            match how / 5 % 3 {
                0 => {}
                1 => {
                    payload = spoil(&payload, how / 15, at);
                }
                // Dropped: a yakk/2 peer's counter moves on without it.
                _ => return Some(()),
            }
            peer.deliver(h, peer.envelope(sealed_name(version, name), payload));
        }
        // The last message in a sealed message's place, again.
        5 => {
            if let Some(env) = peer.last.clone() {
                peer.deliver(h, env);
            }
        }
        // yakk/2: the peer's counter back to the one the handshake expects.
        6 => peer.resync(),
        // The handshake's own description or candidate of a lane.
        _ => {
            let lane = input.lane()?;
            let got = if input.byte()? % 2 == 0 {
                h.on_local_description(lane, input.text()?)
            } else {
                h.on_local_candidate(lane, candidate(input)?)
            };
            match got {
                Ok(acts) => peer.check_sent(&acts),
                Err(e) => assert!(matches!(e, HandshakeError::OutOfOrder(_)), "{e:?}"),
            }
        }
    }
    Some(())
}
