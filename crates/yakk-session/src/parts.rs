//! The striped streams the peer is opening: their parts arrive one channel at a time, on
//! different lanes, and make a stream once all are in. Free of I/O: the time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the parts of a striped stream the peer opens may take to arrive, all of them.
pub(crate) const PARTS_TIMEOUT: Duration = Duration::from_secs(30);
/// Striped streams the peer may have half opened at once.
const MAX_PARTIAL: usize = 4096;

/// A striped stream the peer is opening: the parts that arrived so far, with the lane each
/// came on.
struct Partial<S> {
    count: usize,
    label: String,
    parts: Vec<(u32, S)>,
    since: Instant,
}

/// The striped streams half opened, for a session of `lanes` lanes.
pub(crate) struct Parts<S> {
    lanes: usize,
    partial: HashMap<u64, Partial<S>>,
}

impl<S> Parts<S> {
    pub(crate) fn new(lanes: usize) -> Self {
        Parts {
            lanes,
            partial: HashMap::new(),
        }
    }

    /// A channel named `name` arrived on lane `lane` at `now`: the stream's label and parts
    /// once it is the last. Streams whose parts took [`PARTS_TIMEOUT`] or more are forgotten
    /// first.
    ///
    /// A stream has at most one part per lane. A second part on a lane replaces the first:
    /// the opener retries an open that failed on its side (`open_channel`), and the channel
    /// of the failed attempt may still have reached us; it carries nothing.
    pub(crate) fn on_part(
        &mut self,
        lane: u32,
        name: &str,
        s: S,
        now: Instant,
    ) -> Option<(String, Vec<S>)> {
        self.partial
            .retain(|_, p| now.duration_since(p.since) < PARTS_TIMEOUT);
        let Some((k, count, label)) = parse_part(name, self.lanes) else {
            tracing::warn!("ignoring a channel with a label that names no striped stream");
            return None;
        };
        if !self.partial.contains_key(&k) && self.partial.len() >= MAX_PARTIAL {
            tracing::warn!("ignoring a channel: too many streams half opened");
            return None;
        }
        let p = self.partial.entry(k).or_insert_with(|| Partial {
            count,
            label: label.to_string(),
            parts: Vec::new(),
            since: now,
        });
        if p.count != count || p.label != label {
            tracing::warn!("ignoring a striped stream whose parts disagree");
            self.partial.remove(&k);
            return None;
        }
        match p.parts.iter_mut().find(|(l, _)| *l == lane) {
            Some(earlier) => earlier.1 = s,
            None => p.parts.push((lane, s)),
        }
        if p.parts.len() < p.count {
            return None;
        }
        let p = self.partial.remove(&k)?;
        Some((p.label, p.parts.into_iter().map(|(_, s)| s).collect()))
    }
}

/// `k/count/label`: part of striped stream `k`, which has `count` parts (at most `lanes`).
fn parse_part(name: &str, lanes: usize) -> Option<(u64, usize, &str)> {
    let mut it = name.splitn(3, '/');
    let k = it.next()?.parse().ok()?;
    let count: usize = it.next()?.parse().ok()?;
    let label = it.next()?;
    (1..=lanes).contains(&count).then_some((k, count, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_labels() {
        assert_eq!(parse_part("7/3/DataConn2", 4), Some((7, 3, "DataConn2")));
        assert_eq!(parse_part("0/1/a/b", 1), Some((0, 1, "a/b")));
        assert_eq!(parse_part("7/5/x", 4), None, "more parts than lanes");
        assert_eq!(parse_part("7/0/x", 4), None);
        assert_eq!(parse_part("DataConn1", 4), None);
        assert_eq!(parse_part("x/1/y", 4), None);
        assert_eq!(parse_part("1/1", 4), None);
    }

    #[test]
    fn a_stream_is_whole_once_every_part_is_in() {
        let t0 = Instant::now();
        let mut parts = Parts::new(4);
        assert_eq!(parts.on_part(0, "0/2/a", 'x', t0), None);
        assert_eq!(
            parts.on_part(0, "1/1/b", 'y', t0),
            Some(("b".into(), vec!['y']))
        );
        assert_eq!(
            parts.on_part(1, "0/2/a", 'z', t0),
            Some(("a".into(), vec!['x', 'z']))
        );
        // Parts that disagree on the count or the label make no stream.
        assert_eq!(parts.on_part(0, "2/2/c", 'x', t0), None);
        assert_eq!(parts.on_part(1, "2/3/c", 'z', t0), None);
        assert_eq!(parts.on_part(2, "2/3/c", 'z', t0), None);
    }

    /// The opener gave up a part's first open and opened it again on the same lane: the
    /// first channel reached us all the same. The stream is made of one part per lane, the
    /// later one, and is whole only when every lane's part is in (before the fix the
    /// duplicate counted as the missing lane's part, and the stream waited forever for data
    /// that lane's part held).
    #[test]
    fn a_part_opened_again_on_its_lane_replaces_the_first() {
        let t0 = Instant::now();
        let mut parts = Parts::new(3);
        assert_eq!(parts.on_part(0, "5/3/s", "lane 0", t0), None);
        assert_eq!(parts.on_part(1, "5/3/s", "lane 1, given up", t0), None);
        assert_eq!(parts.on_part(1, "5/3/s", "lane 1, again", t0), None);
        assert_eq!(
            parts.on_part(2, "5/3/s", "lane 2", t0),
            Some(("s".into(), vec!["lane 0", "lane 1, again", "lane 2"]))
        );
    }

    /// The parts of a striped stream have 30 s to arrive, counted from the first.
    #[test]
    fn parts_have_thirty_seconds_to_arrive() {
        let t0 = Instant::now();
        let mut parts = Parts::new(2);
        assert_eq!(parts.on_part(0, "0/2/in-time", 1, t0), None);
        let last = t0 + PARTS_TIMEOUT - Duration::from_millis(1);
        assert_eq!(
            parts.on_part(1, "0/2/in-time", 2, last),
            Some(("in-time".into(), vec![1, 2]))
        );
        assert_eq!(parts.on_part(0, "1/2/late", 1, t0), None);
        // At 30 s the first part is forgotten: the second starts a stream of its own.
        let late = t0 + PARTS_TIMEOUT;
        assert_eq!(parts.on_part(1, "1/2/late", 2, late), None);
        assert_eq!(
            parts.on_part(0, "1/2/late", 3, late),
            Some(("late".into(), vec![2, 3]))
        );
        assert_eq!(PARTS_TIMEOUT, Duration::from_secs(30));
    }
}
