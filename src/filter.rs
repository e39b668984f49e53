//! Filters and queries (SPEC section 4, `filter`), and how each query is
//! answered: from the aggregate index, the action index, or a scan.

use crate::batch::{Batch, StoredEvent};
use crate::subject::{KeyRange, Pattern};

/// A half-open range `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range<T> {
    pub from: Option<T>,
    pub to: Option<T>,
}

impl<T: PartialOrd + Copy> Range<T> {
    /// Whether `value` lies in the range.
    pub fn contains(&self, value: T) -> bool {
        self.from.is_none_or(|f| value >= f) && self.to.is_none_or(|t| value < t)
    }

    /// Whether the range holds all of the closed interval `[lo, hi]`.
    pub fn covers(&self, lo: T, hi: T) -> bool {
        self.from.is_none_or(|f| lo >= f) && self.to.is_none_or(|t| hi < t)
    }

    /// Whether the range overlaps the closed interval `[lo, hi]`.
    pub fn overlaps(&self, lo: T, hi: T) -> bool {
        self.from.is_none_or(|f| hi >= f) && self.to.is_none_or(|t| lo < t)
    }
}

/// One query: every criterion it sets must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Pattern on the action.
    pub subjects: Option<Pattern>,
    /// Pattern on the aggregate.
    pub aggregate: Option<Pattern>,
    /// Range of the per-aggregate sequence.
    pub sequence: Range<u64>,
    /// Range of `createdAt`, in ms since the epoch.
    pub created_at: Range<f64>,
    /// Range of the log position.
    pub position: Range<u64>,
}

/// Queries OR-ed together, with an optional cap on the result count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Empty means every event.
    pub queries: Vec<Query>,
    pub limit: Option<usize>,
    /// Newest first (descending position); `limit` then keeps the last
    /// events of the log.
    pub reverse: bool,
}

impl Query {
    /// Cheap check on a batch's metadata: `false` means no event of the batch can match.
    pub fn may_match(&self, batch: &Batch) -> bool {
        self.aggregate
            .as_ref()
            .is_none_or(|p| p.matches(&batch.aggregate))
            && self
                .sequence
                .overlaps(batch.first_sequence, batch.last_sequence)
            && self.created_at.contains(batch.created_at as f64)
            && self
                .position
                .overlaps(batch.first_position(), batch.last_position)
    }

    /// Whether the `index`-th event of `batch` matches (after [`Query::may_match`]).
    pub fn matches(&self, batch: &Batch, index: usize, event: &StoredEvent<'_>) -> bool {
        self.sequence.contains(batch.first_sequence + index as u64)
            && self
                .position
                .contains(batch.first_position() + index as u64)
            && self
                .subjects
                .as_ref()
                .is_none_or(|p| p.matches(&event.action))
    }

    /// Whether an event, given by its fields, matches.
    pub fn matches_fields(&self, event: &Fields<'_>) -> bool {
        self.aggregate
            .as_ref()
            .is_none_or(|p| p.matches(event.aggregate))
            && self
                .subjects
                .as_ref()
                .is_none_or(|p| p.matches(event.action))
            && self.sequence.contains(event.sequence)
            && self.created_at.contains(event.created_at)
            && self.position.contains(event.position)
    }

    /// How this query is best answered.
    pub fn access(&self) -> Access {
        let aggregate = self
            .aggregate
            .as_ref()
            .and_then(|p| p.key_range().map(|range| (p.literal_prefix_len(), range)));
        let action = self
            .subjects
            .as_ref()
            .and_then(|p| p.key_range().map(|range| (p.literal_prefix_len(), range)));
        let from_sequence = self.sequence.from.unwrap_or(0);
        match (aggregate, action) {
            (Some((_, range @ KeyRange::Exact(_))), _) => Access::Aggregate {
                range,
                from_sequence,
            },
            (Some((a, range)), Some((b, _))) if a >= b => Access::Aggregate {
                range,
                from_sequence: 0,
            },
            (Some((_, range)), None) => Access::Aggregate {
                range,
                from_sequence: 0,
            },
            (_, Some((_, range))) => Access::Action(range),
            (None, None) => Access::Scan,
        }
    }
}

/// Where the candidates of a query come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Batches whose aggregate lies in `range` (the `aggregate` index), with
    /// a last sequence of at least `from_sequence`.
    Aggregate { range: KeyRange, from_sequence: u64 },
    /// Batches holding an action in the range: those of the range's
    /// [owners](KeyRange::owners) (the `aggregate` index) and those listing
    /// such an action (the sparse `actions` index).
    Action(KeyRange),
    /// Every batch, in position order.
    Scan,
}

impl Filter {
    /// The index lookups that together find every candidate, or `None` when
    /// some query needs a scan of the whole log.
    pub fn plan(&self) -> Option<Vec<Access>> {
        if self.queries.is_empty() {
            return None;
        }
        let mut accesses: Vec<Access> = Vec::new();
        for query in &self.queries {
            let access = query.access();
            if access == Access::Scan {
                return None;
            }
            if !accesses.contains(&access) {
                accesses.push(access);
            }
        }
        Some(accesses)
    }

    /// Whether an event, given by its fields, matches any query.
    pub fn matches_fields(&self, event: &Fields<'_>) -> bool {
        self.queries.is_empty() || self.queries.iter().any(|q| q.matches_fields(event))
    }

    /// The positions any query can match, as `[from, to)`: the union of
    /// the queries' `position` ranges (all of the log without queries or
    /// when a query sets none). Reads are bounded to it.
    pub fn positions(&self) -> (u64, u64) {
        if self.queries.is_empty() {
            return (1, u64::MAX);
        }
        let from = self
            .queries
            .iter()
            .map(|q| q.position.from.unwrap_or(1).max(1))
            .min();
        let to = self
            .queries
            .iter()
            .map(|q| q.position.to.unwrap_or(u64::MAX))
            .max();
        (from.unwrap_or(1), to.unwrap_or(u64::MAX))
    }

    /// The queries that may match events of `batch`, checked once per
    /// batch; `None` when no event of it can match.
    pub fn for_batch(&self, batch: &Batch) -> Option<BatchFilter<'_>> {
        if self.queries.is_empty() {
            return Some(BatchFilter {
                queries: Vec::new(),
            });
        }
        let queries: Vec<&Query> = self.queries.iter().filter(|q| q.may_match(batch)).collect();
        (!queries.is_empty()).then_some(BatchFilter { queries })
    }
}

/// The fields of one event that queries look at.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// Dotted aggregate.
    pub aggregate: &'a str,
    /// Dotted action.
    pub action: &'a str,
    pub sequence: u64,
    pub position: u64,
    pub created_at: f64,
}

/// A [`Filter`] narrowed to one batch by [`Filter::for_batch`].
pub struct BatchFilter<'a> {
    /// Empty: every event matches.
    queries: Vec<&'a Query>,
}

impl BatchFilter<'_> {
    /// Whether every event of the batch matches, so that it need not be
    /// decoded to be filtered: some query left only criteria the batch's
    /// metadata settles (aggregate and `createdAt` are checked per batch).
    pub fn takes_all(&self, batch: &Batch) -> bool {
        self.queries.is_empty()
            || self.queries.iter().any(|q| {
                q.subjects.is_none()
                    && q.sequence.covers(batch.first_sequence, batch.last_sequence)
                    && q.position
                        .covers(batch.first_position(), batch.last_position)
            })
    }

    /// Whether the `index`-th event of the batch matches.
    pub fn matches(&self, batch: &Batch, index: usize, event: &StoredEvent<'_>) -> bool {
        self.queries.is_empty() || self.queries.iter().any(|q| q.matches(batch, index, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(subjects: Option<&str>, aggregate: Option<&str>) -> Query {
        Query {
            subjects: subjects.map(|s| Pattern::parse(s).unwrap()),
            aggregate: aggregate.map(|s| Pattern::parse(s).unwrap()),
            ..Query::default()
        }
    }

    #[test]
    fn plans_from_the_longest_literal_prefix() {
        assert_eq!(query(Some(">"), None).access(), Access::Scan);
        assert_eq!(
            query(Some("user.*.added"), None).access(),
            Access::Action(KeyRange::Prefix("user.".into()))
        );
        assert_eq!(
            query(Some("user.u7.>"), Some("user.*")).access(),
            Access::Action(KeyRange::Prefix("user.u7.".into()))
        );
        assert_eq!(
            query(Some("user.u7.>"), Some("user.u7")).access(),
            Access::Aggregate {
                range: KeyRange::Exact("user.u7".into()),
                from_sequence: 0
            }
        );
        let mut q = query(None, Some("user.u7"));
        q.sequence = Range {
            from: Some(3),
            to: Some(5),
        };
        assert_eq!(
            q.access(),
            Access::Aggregate {
                range: KeyRange::Exact("user.u7".into()),
                from_sequence: 3
            }
        );
    }

    #[test]
    fn a_query_needing_a_scan_makes_the_filter_scan() {
        let f = Filter {
            queries: vec![query(Some("user.>"), None), query(Some("*.x"), None)],
            ..Filter::default()
        };
        assert_eq!(f.plan(), None);
        assert_eq!(Filter::default().plan(), None);
    }

    #[test]
    fn ranges_are_half_open() {
        let r = Range {
            from: Some(2u64),
            to: Some(4),
        };
        assert!(!r.contains(1) && r.contains(2) && r.contains(3) && !r.contains(4));
        assert!(r.overlaps(0, 2) && r.overlaps(3, 9) && !r.overlaps(4, 9) && !r.overlaps(0, 1));
        assert!(r.covers(2, 3) && !r.covers(1, 3) && !r.covers(2, 4));
    }
}
