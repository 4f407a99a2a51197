//! The owner's admission policy: which joiners' key confirmations are judged, and what a wrong
//! one costs. Pure: no I/O, no clock.
//!
//! One code must give an attacker the result of at most one password guess (or `allowed + 1`
//! with `--allow-retries`), however many joiners it plays and however it times them. The owner
//! keeps its own key confirmation until it has judged the joiner's (docs/yakk2-pake.md,
//! "Confirmation order"), so a joiner learns nothing it can test offline, and every judgement
//! goes through [`Admission::judge`]: one at a time (the caller holds a lock), budget checked
//! and spent in the same step, and after the last allowed failure nothing more is judged.

use crate::pake::PakeFailure;

/// Why a joiner's confirmation was not even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An earlier wrong password burned the code.
    Burned,
    /// The room admitted all the joiners it may.
    Full,
}

/// The outcome of judging one key confirmation.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement<T> {
    /// The confirmation verified; the joiner counts against the room's joiners.
    Admitted(T),
    /// The confirmation did not verify: a wrong password. `burned`: this failure used up the
    /// budget, and the code is closed from now on.
    Wrong { burned: bool },
    /// Not judged: the joiner learns nothing about its guess.
    Refused(Refusal),
    /// The confirmation message was malformed: no guess was tested.
    Invalid(String),
}

/// The room's record of guesses and joiners.
#[derive(Debug)]
pub struct Admission {
    allowed_failures: u32,
    failures: u32,
    max_joiners: Option<u32>,
    admitted: u32,
}

impl Admission {
    /// `allowed_failures` wrong passwords are tolerated (the next one burns the code);
    /// `max_joiners` caps the joiners admitted over the room's life (`None`: no cap).
    pub fn new(allowed_failures: u32, max_joiners: Option<u32>) -> Self {
        Admission {
            allowed_failures,
            failures: 0,
            max_joiners,
            admitted: 0,
        }
    }

    pub fn is_burned(&self) -> bool {
        self.failures > self.allowed_failures
    }

    /// Whether a joiner could still be admitted (the code is neither burned nor used up).
    pub fn is_open(&self) -> bool {
        self.refusal().is_none()
    }

    fn refusal(&self) -> Option<Refusal> {
        if self.is_burned() {
            Some(Refusal::Burned)
        } else if self.max_joiners.is_some_and(|m| self.admitted >= m) {
            Some(Refusal::Full)
        } else {
            None
        }
    }

    /// Judges one joiner's key confirmation with `verify`, which is called only when the room
    /// may still admit someone. The caller must hold the only reference (a lock) for the
    /// whole call, so that judgements never overlap.
    pub fn judge<T>(&mut self, verify: impl FnOnce() -> Result<T, PakeFailure>) -> Judgement<T> {
        if let Some(r) = self.refusal() {
            return Judgement::Refused(r);
        }
        match verify() {
            Ok(v) => {
                self.admitted += 1;
                Judgement::Admitted(v)
            }
            Err(PakeFailure::Confirmation) => {
                self.failures += 1;
                Judgement::Wrong {
                    burned: self.is_burned(),
                }
            }
            Err(PakeFailure::Invalid(e)) => Judgement::Invalid(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong() -> Result<(), PakeFailure> {
        Err(PakeFailure::Confirmation)
    }

    #[test]
    fn the_first_wrong_password_burns_by_default() {
        let mut a = Admission::new(0, None);
        assert_eq!(a.judge(wrong), Judgement::Wrong { burned: true });
        assert!(a.is_burned() && !a.is_open());
        // Nothing is judged afterwards, not even the right password.
        let mut called = false;
        let j = a.judge(|| {
            called = true;
            Ok(())
        });
        assert_eq!(j, Judgement::Refused(Refusal::Burned));
        assert!(!called, "a burned room must not evaluate a confirmation");
    }

    #[test]
    fn retries_allow_that_many_failures() {
        let mut a = Admission::new(2, None);
        assert_eq!(a.judge(wrong), Judgement::Wrong { burned: false });
        assert_eq!(a.judge(wrong), Judgement::Wrong { burned: false });
        assert_eq!(a.judge(|| Ok(7)), Judgement::Admitted(7));
        assert_eq!(a.judge(wrong), Judgement::Wrong { burned: true });
        assert_eq!(a.judge(|| Ok(8)), Judgement::Refused(Refusal::Burned));
    }

    #[test]
    fn a_full_room_judges_no_more_confirmations() {
        let mut a = Admission::new(5, Some(1));
        assert_eq!(a.judge(|| Ok(())), Judgement::Admitted(()));
        let mut called = false;
        let j: Judgement<()> = a.judge(|| {
            called = true;
            Err(PakeFailure::Confirmation)
        });
        assert_eq!(j, Judgement::Refused(Refusal::Full));
        assert!(!called);
        assert!(!a.is_burned(), "a refused joiner spent no guess");
    }

    #[test]
    fn a_malformed_confirmation_is_no_guess() {
        let mut a = Admission::new(0, None);
        let j: Judgement<()> = a.judge(|| Err(PakeFailure::Invalid("bad".into())));
        assert_eq!(j, Judgement::Invalid("bad".into()));
        assert!(a.is_open());
    }
}
