//! The sans-IO core of one session: the handshake, its lanes and every deadline. Envelopes,
//! peer-connection events and the time go in; [`Command`]s for the driver come out, and at
//! last an [`Outcome`]. The driver only carries commands out and reports back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use yakk_transport::Disconnect;
use yakk_wire::{Envelope, IceCandidate};

use crate::SessionError;
use crate::handshake::{
    Action, FEATURE_OPENER_CLOSES, FEATURE_SMALL_BURSTS, FEATURE_WINDOW, Handshake, Role, Version,
};

/// How long the PAKE and the exchange of descriptions may take once the peer is known.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the other lanes may take to come up once lane 0 is. A lane whose DTLS handshake
/// lost a flight comes about a second late (the stack's first retransmission); one that lost
/// more is given up rather than waited for, as on a lossy link some lanes never come
/// (bench/WAN.md).
pub(crate) const LANE_GRACE: Duration = Duration::from_secs(2);

/// What the core asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Send this envelope to the signalling server; the session fails if it cannot.
    Send(Envelope),
    /// Send this envelope if the signalling server is still there; the session goes on
    /// either way.
    Notify(Envelope),
    /// Make the peer connection of `lane`, with the settings of `version`.
    CreatePeer { lane: u32, version: Version },
    /// Tune the peer connection of `lane` before its first stream (see `crate::tune_lane`).
    Tune {
        lane: u32,
        flow: bool,
        opener_closes: bool,
        /// The peer asked for small bursts (`small-bursts`).
        small_bursts: bool,
        lanes: u32,
    },
    /// Make an offer on `lane`; report it with [`Session::on_description`].
    MakeOffer(u32),
    /// Apply the peer's offer on `lane`; report the answer with [`Session::on_description`].
    AcceptOffer(u32, String),
    /// Apply the peer's answer on `lane`; report a failure with [`Session::on_failure`].
    AcceptAnswer(u32, String),
    /// Add the peer's candidate to `lane` (a failure is only logged).
    AddCandidate(u32, IceCandidate),
    /// Close the peer connection of `lane`: the session goes on without it.
    CloseLane(u32),
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Lane 0 is up and every other lane is up or given up: these lanes (lane 0 first) make
    /// the connection.
    Connected {
        version: Version,
        /// The lanes agreed; streams are striped when more than one.
        agreed: u32,
        up: Vec<u32>,
    },
    Failed(SessionError),
}

/// One lane as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Its peer connection exists, not connected yet.
    Made,
    Up,
    /// Failed, or never made: the session goes on without it.
    Gone,
}

pub(crate) struct Session {
    hs: Handshake,
    role: Role,
    connect_timeout: Duration,
    commands: VecDeque<Command>,
    outcome: Option<Outcome>,
    /// Until the key is confirmed the peer has [`HANDSHAKE_TIMEOUT`]; then ICE has
    /// `connect_timeout`.
    deadline: Instant,
    /// Once lane 0 is up, the other lanes have [`LANE_GRACE`] more to come up.
    lane0_up: Option<Instant>,
    lanes: Vec<Lane>,
    /// Per-stream flow control, once lane 0's descriptions agreed on it.
    flow: bool,
    /// With it, the opener of a stream closes it (both announced `opener-closes`).
    opener_closes: bool,
    /// The peer announced `small-bursts`.
    small_bursts: bool,
    /// The data-plane features this side announces.
    features: &'static [&'static str],
}

/// The data-plane features a session announces (docs/yakk2.md).
const FEATURES: &[&str] = &[FEATURE_WINDOW, FEATURE_OPENER_CLOSES];

impl Session {
    /// A session around `hs`, started at `now`; `first` are the handshake's first actions.
    pub(crate) fn new(
        hs: Handshake,
        role: Role,
        first: Vec<Action>,
        connect_timeout: Duration,
        now: Instant,
    ) -> Self {
        let mut s = Session {
            hs,
            role,
            connect_timeout,
            commands: VecDeque::new(),
            outcome: None,
            deadline: now + HANDSHAKE_TIMEOUT,
            lane0_up: None,
            lanes: Vec::new(),
            flow: false,
            opener_closes: false,
            small_bursts: false,
            features: FEATURES,
        };
        s.actions(first, now);
        s
    }

    /// The next command for the driver.
    pub(crate) fn poll_command(&mut self) -> Option<Command> {
        if self.outcome.is_some() {
            // Closing lanes is all that is left to do.
            return match self.commands.pop_front()? {
                c @ (Command::CloseLane(_) | Command::Notify(_)) => Some(c),
                _ => self.poll_command(),
            };
        }
        self.commands.pop_front()
    }

    /// How the session ended, once it did and every command was carried out.
    pub(crate) fn poll_outcome(&mut self, now: Instant) -> Option<Outcome> {
        if !self.commands.is_empty() {
            return None;
        }
        self.check_done(now);
        self.outcome.take()
    }

    /// Whether the key was confirmed (for an owner: the joiner was admitted).
    pub(crate) fn is_confirmed(&self) -> bool {
        self.hs.is_confirmed()
    }

    /// Owner: whether this joiner's wrong password burned the code.
    pub(crate) fn burned_room(&self) -> bool {
        self.hs.burned_room()
    }

    /// When [`Session::handle_timeout`] is due.
    pub(crate) fn poll_timeout(&self) -> Instant {
        match self.lane0_up {
            Some(t) => (t + LANE_GRACE).min(self.deadline),
            None => self.deadline,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() || now < self.poll_timeout() {
            return;
        }
        if self.lane0_up.is_none() {
            self.fail(if self.hs.is_confirmed() {
                SessionError::NoPath
            } else {
                SessionError::HandshakeTimeout
            });
            return;
        }
        self.finish();
    }

    /// An envelope from the peer.
    pub(crate) fn on_message(&mut self, env: &Envelope, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        match self.hs.on_message(env) {
            Ok(actions) => self.actions(actions, now),
            Err(e) => {
                // Tell the peer, or it would wait for its timeout and blame the network.
                if let Some(notice) = self.hs.abort_notice(&e) {
                    self.commands.push_back(Command::Notify(notice));
                }
                self.fail(e.into());
            }
        }
    }

    /// The peer's envelopes ended.
    pub(crate) fn on_signal_end(&mut self) {
        self.fail(match self.role {
            Role::Joiner => SessionError::SignalClosed("while negotiating".into()),
            // The owner's router let go of this joiner.
            Role::Owner => SessionError::PeerGone(
                "dropped: too many joiners at once, or the room closed".into(),
            ),
        });
    }

    /// The driver could not send an envelope.
    pub(crate) fn on_send_failed(&mut self) {
        self.fail(SessionError::SignalClosed("while negotiating".into()));
    }

    /// Our offer or answer on `lane` is ready (or could not be made).
    pub(crate) fn on_description(&mut self, lane: u32, sdp: Result<String, SessionError>) {
        match sdp {
            Ok(sdp) if self.is_live(lane) => match self.hs.on_local_description(lane, sdp) {
                Ok(actions) => self.sends(actions),
                Err(e) => self.fail(e.into()),
            },
            Ok(_) => {}
            Err(e) => self.on_failure(lane, e),
        }
    }

    /// A command on `lane` failed: lane 0 ends the session, another lane is given up.
    pub(crate) fn on_failure(&mut self, lane: u32, e: SessionError) {
        if lane == 0 {
            self.fail(e);
        } else {
            self.drop_lane(lane, &e.to_string());
        }
    }

    /// The peer connection of `lane` gathered a candidate.
    pub(crate) fn on_local_candidate(&mut self, lane: u32, c: IceCandidate) {
        if self.is_live(lane) {
            match self.hs.on_local_candidate(lane, c) {
                Ok(actions) => self.sends(actions),
                Err(e) => self.fail(e.into()),
            }
        }
    }

    /// The peer connection of `lane` connected.
    pub(crate) fn on_connected(&mut self, lane: u32, now: Instant) {
        if let Some(l @ Lane::Made) = self.lanes.get_mut(lane as usize) {
            *l = Lane::Up;
        }
        if lane == 0 {
            self.lane0_up = Some(now);
            for a in self.hs.on_connected() {
                if let Action::Send(env) = a {
                    self.commands.push_back(Command::Notify(env));
                }
            }
        }
    }

    /// The peer connection of `lane` ended: lane 0 failing before ever connecting means ICE
    /// found no path.
    pub(crate) fn on_disconnected(&mut self, lane: u32, why: Disconnect) {
        if lane == 0 {
            tracing::info!("the peer connection failed before connecting: {why}");
            self.fail(SessionError::NoPath);
        } else {
            self.drop_lane(lane, &why.to_string());
        }
    }

    fn is_live(&self, lane: u32) -> bool {
        self.lanes
            .get(lane as usize)
            .is_some_and(|l| *l != Lane::Gone)
    }

    fn sends(&mut self, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send(env) = a {
                self.commands.push_back(Command::Send(env));
            }
        }
    }

    fn fail(&mut self, e: SessionError) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Failed(e));
        }
    }

    fn set_lane(&mut self, lane: u32, state: Lane) {
        let i = lane as usize;
        if self.lanes.len() <= i {
            self.lanes.resize(i + 1, Lane::Gone);
        }
        self.lanes[i] = state;
    }

    /// Gives up an extra lane (one that failed to negotiate or connect).
    fn drop_lane(&mut self, lane: u32, why: &str) {
        if self.is_live(lane) {
            tracing::info!(lane, "going on without this lane: {why}");
            self.set_lane(lane, Lane::Gone);
            self.commands.retain(|c| lane_of(c) != Some(lane));
            self.commands.push_back(Command::CloseLane(lane));
        }
    }

    fn tune(&mut self, lane: u32) {
        let (flow, opener_closes, lanes) = (self.flow, self.opener_closes, self.hs.lanes());
        self.commands.push_back(Command::Tune {
            lane,
            flow,
            opener_closes,
            small_bursts: self.small_bursts,
            lanes,
        });
    }

    /// Carries out the handshake's actions as commands.
    fn actions(&mut self, actions: Vec<Action>, now: Instant) {
        for a in actions {
            match a {
                Action::Send(env) => self.commands.push_back(Command::Send(env)),
                Action::OfferEarly(version) => self.make_first_lanes(version),
                Action::KeyConfirmed(version) => {
                    tracing::info!(%version, "key confirmed");
                    self.deadline = now + self.connect_timeout;
                    if self.lanes.is_empty() {
                        self.make_first_lanes(version);
                    }
                }
                Action::AcceptOffer(0, sdp) => {
                    if !self.is_live(0) {
                        return self.fail(SessionError::Internal("offer before keys"));
                    }
                    self.agree();
                    self.tune(0);
                    self.commands.push_back(Command::AcceptOffer(0, sdp));
                }
                Action::AcceptOffer(lane, sdp) => {
                    let Some(version) = self.hs.version() else {
                        return self.fail(SessionError::Internal("offer before keys"));
                    };
                    self.set_lane(lane, Lane::Made);
                    self.commands
                        .push_back(Command::CreatePeer { lane, version });
                    self.tune(lane);
                    self.commands.push_back(Command::AcceptOffer(lane, sdp));
                }
                Action::AcceptAnswer(lane, sdp) => {
                    if !self.is_live(lane) {
                        if lane == 0 {
                            return self.fail(SessionError::Internal("answer before keys"));
                        }
                        continue;
                    }
                    if lane > 0 {
                        self.commands.push_back(Command::AcceptAnswer(lane, sdp));
                    } else {
                        self.agree();
                        self.tune(0);
                        self.commands.push_back(Command::AcceptAnswer(0, sdp));
                        let Some(version) = self.hs.version() else {
                            return self.fail(SessionError::Internal("answer before keys"));
                        };
                        let agreed = self.hs.lanes();
                        let made = self.lanes.len() as u32;
                        // The lanes offered with lane 0: tuned now that the features are known,
                        // or given up if not agreed (the owner's announcement was altered on
                        // the way). One that failed already is not made again.
                        for early in 1..made {
                            if early >= agreed {
                                self.drop_lane(early, "not agreed");
                            } else if self.is_live(early) {
                                self.tune(early);
                            }
                        }
                        // The other lanes: one offer each.
                        for extra in made.max(1)..agreed {
                            self.set_lane(extra, Lane::Made);
                            self.commands.push_back(Command::CreatePeer {
                                lane: extra,
                                version,
                            });
                            self.tune(extra);
                            self.commands.push_back(Command::MakeOffer(extra));
                        }
                    }
                }
                Action::AddCandidate(lane, c) => {
                    if !self.is_live(lane) {
                        if lane == 0 {
                            return self.fail(SessionError::Internal("candidate before keys"));
                        }
                        continue;
                    }
                    self.commands.push_back(Command::AddCandidate(lane, c));
                }
            }
        }
    }

    /// The first peer connections once the key is agreed: lane 0's and, for a joiner whose
    /// owner announced its lanes, those offered with it; a joiner's offer on each.
    fn make_first_lanes(&mut self, version: Version) {
        for f in self.features {
            self.hs.announce(f);
        }
        // A joiner whose owner announced enough lanes offers them with lane 0's.
        let early = match self.role {
            Role::Joiner => self.hs.early_lanes(),
            Role::Owner => 1,
        };
        for lane in 0..early {
            self.set_lane(lane, Lane::Made);
            self.commands
                .push_back(Command::CreatePeer { lane, version });
            if self.role == Role::Joiner {
                self.commands.push_back(Command::MakeOffer(lane));
            }
        }
    }

    /// Lane 0's descriptions are both known: per-stream flow control and the lanes.
    fn agree(&mut self) {
        self.flow = self.hs.agreed(FEATURE_WINDOW);
        self.opener_closes = self.flow && self.hs.agreed(FEATURE_OPENER_CLOSES);
        self.small_bursts = self.hs.peer_announced(FEATURE_SMALL_BURSTS);
        tracing::debug!(
            flow = self.flow,
            opener_closes = self.opener_closes,
            small_bursts = self.small_bursts,
            lanes = self.hs.lanes(),
            "per-stream flow control, lanes"
        );
    }

    /// Done once lane 0 is up and every other lane is up or gone.
    fn check_done(&mut self, now: Instant) {
        if self.lane0_up.is_none() || self.outcome.is_some() {
            return;
        }
        let all_made = self.lanes.len() >= self.hs.lanes() as usize;
        let settled = !self.lanes.contains(&Lane::Made);
        if (all_made && settled) || self.poll_timeout() <= now {
            self.finish();
        }
    }

    /// Ends with the lanes that are up; the others are closed.
    fn finish(&mut self) {
        let Some(version) = self.hs.version() else {
            return self.fail(SessionError::Internal("connected without a version"));
        };
        let mut up = Vec::new();
        for (i, l) in self.lanes.clone().into_iter().enumerate() {
            let lane = i as u32;
            match l {
                Lane::Up => up.push(lane),
                Lane::Made => {
                    tracing::info!(lane, "going on without this lane: not connected in time");
                    self.commands.push_back(Command::CloseLane(lane));
                }
                Lane::Gone => {}
            }
        }
        let agreed = self.hs.lanes();
        if agreed > 1 {
            tracing::info!("{} of {agreed} lanes up", up.len());
        }
        self.outcome = Some(Outcome::Connected {
            version,
            agreed,
            up,
        });
    }
}

/// The lane a command is for, if one.
fn lane_of(c: &Command) -> Option<u32> {
    match c {
        Command::Send(_) | Command::Notify(_) => None,
        Command::CreatePeer { lane, .. } | Command::Tune { lane, .. } => Some(*lane),
        Command::MakeOffer(l)
        | Command::AcceptOffer(l, _)
        | Command::AcceptAnswer(l, _)
        | Command::AddCandidate(l, _)
        | Command::CloseLane(l) => Some(*l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Params, Role};

    const CONNECT: Duration = Duration::from_secs(15);
    const MS: Duration = Duration::from_millis(1);

    fn params(role: Role, lanes: u32) -> Params {
        Params {
            lanes,
            ..crate::handshake::tests::params(role, "pw")
        }
    }

    /// A joiner wishing for `lanes` and an owner, both started at `t0`.
    fn pair(lanes: u32, t0: Instant) -> (Session, Session) {
        let (hs, first) = Handshake::joiner(params(Role::Joiner, lanes));
        let joiner = Session::new(hs, Role::Joiner, first, CONNECT, t0);
        let hs = Handshake::owner(params(Role::Owner, 1));
        let owner = Session::new(hs, Role::Owner, vec![], CONNECT, t0);
        (joiner, owner)
    }

    /// Carries out both sides' commands at `now` as a perfect network and peer connections
    /// would, until neither has any; returns the lanes each side closed.
    fn pump(j: &mut Session, o: &mut Session, now: Instant) -> (Vec<u32>, Vec<u32>) {
        pump_tuning(j, o, now, &mut Vec::new())
    }

    /// A side's `Tune` command: (side (0: the joiner), lane, flow, opener_closes,
    /// small_bursts).
    type Tuned = (usize, u32, bool, bool, bool);

    /// As [`pump`], noting each side's `Tune` commands.
    fn pump_tuning(
        j: &mut Session,
        o: &mut Session,
        now: Instant,
        tunes: &mut Vec<Tuned>,
    ) -> (Vec<u32>, Vec<u32>) {
        let mut closed = (vec![], vec![]);
        loop {
            let mut busy = false;
            for side in [0, 1] {
                let (me, other, closed) = match side {
                    0 => (&mut *j, &mut *o, &mut closed.0),
                    _ => (&mut *o, &mut *j, &mut closed.1),
                };
                while let Some(c) = me.poll_command() {
                    busy = true;
                    match c {
                        Command::Send(env) | Command::Notify(env) => other.on_message(&env, now),
                        Command::MakeOffer(l) => me.on_description(l, Ok(format!("offer {l}"))),
                        Command::AcceptOffer(l, _) => {
                            me.on_description(l, Ok(format!("answer {l}")))
                        }
                        Command::CloseLane(l) => closed.push(l),
                        Command::Tune {
                            lane,
                            flow,
                            opener_closes,
                            small_bursts,
                            ..
                        } => tunes.push((side, lane, flow, opener_closes, small_bursts)),
                        Command::CreatePeer { .. }
                        | Command::AcceptAnswer(..)
                        | Command::AddCandidate(..) => {}
                    }
                }
            }
            if !busy {
                return closed;
            }
        }
    }

    /// Runs a joiner wishing for 4 lanes and an owner to the end of their commands, as
    /// [`pump`] does; the owner's lane announcement reaches the joiner if `announced`, and the
    /// joiner's offer on `failing` cannot be made. Returns the joiner's commands on lanes, in
    /// order ("make 1", "tune 1", "offer 1", "answer 1", "close 1"), and both sessions.
    fn run_lanes(
        announced: bool,
        failing: Option<u32>,
        t0: Instant,
    ) -> (Vec<String>, Session, Session) {
        let (mut j, mut o) = pair(4, t0);
        let mut log: Vec<String> = vec![];
        loop {
            let mut busy = false;
            while let Some(c) = j.poll_command() {
                busy = true;
                match c {
                    Command::Send(env) | Command::Notify(env) => o.on_message(&env, t0),
                    Command::MakeOffer(l) if Some(l) == failing => {
                        j.on_description(l, Err(SessionError::Internal("no offer")))
                    }
                    Command::MakeOffer(l) => {
                        log.push(format!("offer {l}"));
                        j.on_description(l, Ok(format!("offer {l}")));
                    }
                    Command::CreatePeer { lane, .. } => log.push(format!("make {lane}")),
                    Command::Tune { lane, .. } => log.push(format!("tune {lane}")),
                    Command::AcceptAnswer(l, _) => log.push(format!("answer {l}")),
                    Command::CloseLane(l) => log.push(format!("close {l}")),
                    c => panic!("{c:?}"),
                }
            }
            while let Some(c) = o.poll_command() {
                busy = true;
                match c {
                    Command::Send(env) | Command::Notify(env)
                        if announced || env.msg_type != crate::handshake::msg2::LANES =>
                    {
                        j.on_message(&env, t0);
                    }
                    Command::AcceptOffer(l, _) => o.on_description(l, Ok(format!("answer {l}"))),
                    _ => {}
                }
            }
            if !busy {
                return (log, j, o);
            }
        }
    }

    /// How many times `what` is in `log`.
    fn count(log: &[String], what: &str) -> usize {
        log.iter().filter(|x| *x == what).count()
    }

    /// With the owner's announcement of the lanes it answers with, a joiner makes every lane's
    /// offer before lane 0's answer comes back; without it (an owner from before lanes were
    /// announced), only after. Either way each lane is made once and tuned once, and all of
    /// them come up.
    #[test]
    fn lanes_are_offered_with_lane_zero_when_the_owner_announces_them() {
        for announced in [true, false] {
            let t0 = Instant::now();
            let (log, mut j, mut o) = run_lanes(announced, None, t0);
            let at = |s: &str| log.iter().position(|x| x == s).unwrap_or(usize::MAX);
            for lane in 1..4 {
                let offered = at(&format!("offer {lane}"));
                assert!(offered < usize::MAX, "announced {announced}: {log:?}");
                assert_eq!(offered < at("answer 0"), announced, "{log:?}");
                for what in ["make", "tune", "offer", "answer"] {
                    let n = count(&log, &format!("{what} {lane}"));
                    assert_eq!(n, 1, "announced {announced}, {what} {lane}: {log:?}");
                }
                // Tuned once lane 0's answer said which features both sides speak.
                assert!(at(&format!("tune {lane}")) > at("answer 0"), "{log:?}");
            }
            for s in [&mut j, &mut o] {
                for lane in 0..4 {
                    s.on_connected(lane, t0);
                }
                let outcome = s.poll_outcome(t0);
                assert!(
                    matches!(&outcome, Some(Outcome::Connected { up, agreed: 4, .. }) if up.len() == 4),
                    "announced {announced}: {outcome:?}"
                );
            }
        }
    }

    /// A lane offered with lane 0 whose offer could not be made is given up, and not made
    /// again once lane 0's answer comes: a second offer on it would be refused by the owner.
    #[test]
    fn an_early_lane_that_failed_is_not_made_again() {
        let t0 = Instant::now();
        let (log, mut j, _) = run_lanes(true, Some(2), t0);
        assert_eq!(count(&log, "make 2"), 1, "{log:?}");
        assert_eq!(count(&log, "offer 2"), 0, "{log:?}");
        assert_eq!(count(&log, "close 2"), 1, "{log:?}");
        assert_eq!(count(&log, "tune 2"), 0, "{log:?}");
        for lane in [0, 1, 3] {
            j.on_connected(lane, t0);
        }
        let outcome = j.poll_outcome(t0);
        assert!(
            matches!(&outcome, Some(Outcome::Connected { up, agreed: 4, .. }) if *up == [0, 1, 3]),
            "{outcome:?}"
        );
    }

    #[test]
    fn the_peer_has_thirty_seconds_for_the_handshake() {
        let t0 = Instant::now();
        let hs = Handshake::owner(params(Role::Owner, 1));
        let mut o = Session::new(hs, Role::Owner, vec![], CONNECT, t0);
        assert_eq!(o.poll_timeout(), t0 + Duration::from_secs(30));
        o.handle_timeout(t0 + Duration::from_secs(30) - MS);
        assert!(o.poll_outcome(t0 + Duration::from_secs(30) - MS).is_none());
        o.handle_timeout(t0 + Duration::from_secs(30));
        let outcome = o.poll_outcome(t0 + Duration::from_secs(30));
        assert!(
            matches!(
                outcome,
                Some(Outcome::Failed(SessionError::HandshakeTimeout))
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn once_the_key_is_confirmed_ice_has_the_connect_timeout() {
        let t0 = Instant::now();
        let (mut j, mut o) = pair(1, t0);
        let t1 = t0 + Duration::from_secs(20);
        pump(&mut j, &mut o, t1);
        assert!(j.is_confirmed() && o.is_confirmed());
        for s in [&mut j, &mut o] {
            assert_eq!(s.poll_timeout(), t1 + CONNECT);
            s.handle_timeout(t1 + CONNECT - MS);
            assert!(s.poll_outcome(t1 + CONNECT - MS).is_none());
            s.handle_timeout(t1 + CONNECT);
            let outcome = s.poll_outcome(t1 + CONNECT);
            assert!(
                matches!(outcome, Some(Outcome::Failed(SessionError::NoPath))),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn the_other_lanes_have_two_seconds_after_lane_zero() {
        let t0 = Instant::now();
        let (mut j, mut o) = pair(3, t0);
        pump(&mut j, &mut o, t0);
        let t1 = t0 + Duration::from_secs(2);
        for s in [&mut j, &mut o] {
            s.on_connected(0, t1);
            s.on_connected(2, t1);
        }
        // Lane 1 is not up: both sides wait for it, and no longer than the grace.
        let grace = t1 + Duration::from_secs(2);
        for s in [&mut j, &mut o] {
            assert!(s.poll_outcome(t1).is_none());
            assert_eq!(s.poll_timeout(), grace);
            s.handle_timeout(grace - MS);
            assert!(s.poll_outcome(grace - MS).is_none());
            s.handle_timeout(grace);
        }
        let (jc, oc) = pump(&mut j, &mut o, grace);
        assert_eq!((jc, oc), (vec![1], vec![1]), "the late lane is closed");
        for s in [&mut j, &mut o] {
            let outcome = s.poll_outcome(grace);
            assert!(
                matches!(&outcome, Some(Outcome::Connected { agreed: 3, up, .. }) if *up == [0, 2]),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_session_is_done_as_soon_as_every_lane_is_up() {
        let t0 = Instant::now();
        let (mut j, mut o) = pair(2, t0);
        pump(&mut j, &mut o, t0);
        for s in [&mut j, &mut o] {
            s.on_connected(0, t0);
            assert!(s.poll_outcome(t0).is_none());
            s.on_connected(1, t0);
            let outcome = s.poll_outcome(t0);
            assert!(
                matches!(&outcome, Some(Outcome::Connected { up, .. }) if *up == [0, 1]),
                "{outcome:?}"
            );
        }
    }

    /// Two yakk peers of today agree on flow control and on the opener closing streams, and
    /// every lane is tuned so before its first stream; a peer that announces only `window`
    /// (the browser, older versions) gets flow control with the acceptor closing.
    #[test]
    fn both_sides_tune_every_lane_for_the_opener_to_close() {
        let t0 = Instant::now();
        let (mut j, mut o) = pair(2, t0);
        let mut tunes = Vec::new();
        pump_tuning(&mut j, &mut o, t0, &mut tunes);
        tunes.sort();
        assert_eq!(
            tunes,
            [
                (0, 0, true, true, false),
                (0, 1, true, true, false),
                (1, 0, true, true, false),
                (1, 1, true, true, false)
            ]
        );

        let (mut j, mut o) = pair(1, t0);
        o.features = &[FEATURE_WINDOW];
        let mut tunes = Vec::new();
        pump_tuning(&mut j, &mut o, t0, &mut tunes);
        assert!(!tunes.is_empty());
        assert!(
            tunes
                .iter()
                .all(|&(_, _, flow, opener_closes, _)| flow && !opener_closes),
            "{tunes:?}"
        );
    }

    /// A peer that announces `small-bursts` (the browser page) gets a connection tuned for
    /// small bursts on the other side, whatever that side announces itself; its own side is
    /// not tuned so, and neither is a session between two yakk peers (above).
    #[test]
    fn a_peer_that_asks_for_small_bursts_gets_them_from_the_other_side() {
        let t0 = Instant::now();
        for (owner_asks, joiner_asks) in [(true, false), (false, true)] {
            let (mut j, mut o) = pair(1, t0);
            if owner_asks {
                o.features = &[FEATURE_WINDOW, FEATURE_SMALL_BURSTS];
            }
            if joiner_asks {
                j.features = &[FEATURE_WINDOW, FEATURE_SMALL_BURSTS];
            }
            let mut tunes = Vec::new();
            pump_tuning(&mut j, &mut o, t0, &mut tunes);
            tunes.sort();
            assert_eq!(
                tunes,
                [
                    (0, 0, true, false, owner_asks),
                    (1, 0, true, false, joiner_asks)
                ],
                "owner asks: {owner_asks}, joiner asks: {joiner_asks}"
            );
        }
    }
}
