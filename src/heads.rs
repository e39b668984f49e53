//! A cache of aggregate heads (current sequences) that saves a push the
//! IndexedDB lookups for aggregates it already knows.
//!
//! It is only trusted when it provably describes the log: it records the
//! log's last position at the moment its heads were true, and a push reads
//! the log's last position inside its own (serialized) write transaction.
//! Positions only grow, so an unchanged last position means nothing was
//! committed since, by this page or any other; a changed one throws the
//! cache away.

use std::cell::RefCell;
use std::collections::HashMap;

/// Most aggregates remembered; past that the cache starts over.
pub const MAX_CACHED: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    /// The log's last position when `heads` were true; `None`: know nothing.
    end: Option<u64>,
    heads: HashMap<String, u64>,
    /// Every aggregate of the log is in `heads` (true from an empty log on).
    complete: bool,
}

/// See the module documentation. Borrowed only briefly, never across an await.
#[derive(Debug, Default)]
pub struct HeadCache(RefCell<State>);

impl HeadCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The aggregates whose heads must be read from storage if the cache
    /// turns out valid: those it does not know (none once complete).
    pub fn unknown<'a>(&self, aggregates: &[&'a str]) -> Vec<&'a str> {
        let s = self.0.borrow();
        if s.end.is_none() {
            return aggregates.to_vec();
        }
        if s.complete {
            return Vec::new();
        }
        aggregates
            .iter()
            .copied()
            .filter(|a| !s.heads.contains_key(*a))
            .collect()
    }

    /// The log's end and the heads of `aggregates` as the cache last knew
    /// them, if it knows them all: a guess, to be proven by a write that
    /// fails if the log has moved on since (see `engine::push`).
    pub fn guess(&self, aggregates: &[&str]) -> Option<(u64, HashMap<String, u64>)> {
        let s = self.0.borrow();
        let end = s.end?;
        let mut heads = HashMap::with_capacity(aggregates.len());
        for a in aggregates {
            let head = match s.heads.get(*a) {
                Some(h) => *h,
                None if s.complete => 0,
                None => return None,
            };
            heads.insert(a.to_string(), head);
        }
        Some((end, heads))
    }

    /// Forgets everything (after a guess proved wrong).
    pub fn clear(&self) {
        *self.0.borrow_mut() = State::default();
    }

    /// Heads of `aggregates` if the cache is valid for a log ending at
    /// `end`, taking `fetched` for the ones it did not know; `None` when
    /// the log moved on (the cache is then emptied).
    pub fn heads(
        &self,
        end: u64,
        aggregates: &[&str],
        fetched: &HashMap<String, u64>,
    ) -> Option<HashMap<String, u64>> {
        let mut s = self.0.borrow_mut();
        if s.end != Some(end) {
            *s = State::default();
            return None;
        }
        Some(
            aggregates
                .iter()
                .map(|a| {
                    let head = fetched
                        .get(*a)
                        .or_else(|| s.heads.get(*a))
                        .copied()
                        .unwrap_or(0);
                    (a.to_string(), head)
                })
                .collect(),
        )
    }

    /// Records heads that were true when the log ended at `end` (read or
    /// written in one transaction). Heads of other aggregates stay valid
    /// only if the cache was valid at `previous_end`.
    pub fn record(
        &self,
        previous_end: u64,
        end: u64,
        heads: impl IntoIterator<Item = (String, u64)>,
    ) {
        let mut s = self.0.borrow_mut();
        if s.end != Some(previous_end) {
            *s = State {
                complete: previous_end == 0,
                ..State::default()
            };
        }
        s.end = Some(end);
        s.heads.extend(heads);
        if s.heads.len() > MAX_CACHED {
            *s = State::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(a, h)| (a.to_string(), *h)).collect()
    }

    #[test]
    fn trusts_heads_only_while_the_log_end_is_unchanged() {
        let c = HeadCache::new();
        assert_eq!(c.unknown(&["a"]), ["a"]);
        assert_eq!(c.heads(0, &["a"], &map(&[])), None, "knows nothing yet");
        c.record(0, 3, map(&[("a", 3)]));
        assert!(
            c.unknown(&["a", "b"]).is_empty(),
            "complete from an empty log"
        );
        assert_eq!(
            c.heads(3, &["a", "b"], &map(&[])),
            Some(map(&[("a", 3), ("b", 0)]))
        );
        // Another tab committed: the end moved, the cache is dropped.
        assert_eq!(c.heads(5, &["a"], &map(&[])), None);
        assert_eq!(c.unknown(&["a"]), ["a"]);
        c.record(5, 5, map(&[("a", 4)]));
        assert_eq!(c.unknown(&["a", "b"]), ["b"], "no longer complete");
        assert_eq!(
            c.heads(5, &["a", "b"], &map(&[("b", 1)])),
            Some(map(&[("a", 4), ("b", 1)]))
        );
    }

    #[test]
    fn guesses_only_what_it_knows() {
        let c = HeadCache::new();
        assert_eq!(c.guess(&["a"]), None, "knows nothing yet");
        c.record(0, 3, map(&[("a", 3)]));
        assert_eq!(c.guess(&["a", "b"]), Some((3, map(&[("a", 3), ("b", 0)]))));
        c.record(7, 9, map(&[("b", 1)]));
        assert_eq!(c.guess(&["b"]), Some((9, map(&[("b", 1)]))));
        assert_eq!(c.guess(&["a", "b"]), None, "a is unknown after a gap");
        c.clear();
        assert_eq!(c.guess(&["b"]), None);
    }

    #[test]
    fn a_record_after_a_gap_starts_over() {
        let c = HeadCache::new();
        c.record(0, 2, map(&[("a", 2)]));
        c.record(7, 9, map(&[("b", 1)]));
        assert_eq!(c.unknown(&["a", "b"]), ["a"]);
    }
}
