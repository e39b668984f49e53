//! The loss marker: a small record kept outside IndexedDB (the web layer
//! stores it in the Origin Private File System) that remembers which log a
//! database held and the last position this origin knew in it. Browsers may
//! reset a database after an I/O error (Chromium does after a full disk);
//! comparing the marker with what an open finds tells such a loss from a new
//! store. Format and rules: `docs/storage.md`, "The loss marker".

use crate::error::Result;
use crate::storage::{Storage, Transaction};

/// The marker's format version, written as `format`.
pub const FORMAT: u32 = 1;

/// How long a known position may wait before the marker is rewritten
/// (milliseconds). The first events of a log are written at once.
pub const WRITE_EVERY_MS: f64 = 1000.0;

/// What the marker file holds: JSON `{ format, name, firstId, lastPosition }`,
/// written and parsed by the web layer in JavaScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// [`FORMAT`].
    pub format: u32,
    /// The store's name (the IndexedDB database name).
    pub name: String,
    /// The id of the event at position 1: the log's identity. `forget`
    /// keeps ids, so it never changes while the log lives.
    pub first_id: String,
    /// The last position known to have been committed.
    pub last_position: u64,
}

/// What an open finds in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The id of the event at position 1, if the log has events.
    pub first_id: Option<String>,
    /// The last position in the log (0 when empty).
    pub last_position: u64,
}

/// Reads what [`check`] compares in one read transaction: the id of the
/// log's first event and its last position.
pub async fn found<S: Storage>(storage: &S) -> Result<Found> {
    let tx = storage.read().await?;
    let last_position = tx.last_position().await?;
    if last_position == 0 {
        return Ok(Found {
            first_id: None,
            last_position,
        });
    }
    let first = tx.scan(1, last_position, 1).await?;
    let first_id = match first.first() {
        Some(batch) => {
            let text = tx.text(batch)?;
            let events = batch.decode_text(&text)?;
            events.first().map(|e| e.id.to_string())
        }
        None => None,
    };
    Ok(Found {
        first_id,
        last_position,
    })
}

/// How the database differs from what the marker remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The database holds no events (it was missing or reset).
    Empty,
    /// Another log: its first event is not the remembered one.
    Replaced,
    /// The same log, ending before the remembered position.
    Shorter,
}

impl Loss {
    /// The word JavaScript sees as `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Empty => "empty",
            Loss::Replaced => "replaced",
            Loss::Shorter => "shorter",
        }
    }
}

/// Compares a marker with what an open found: `Some(loss)` when events the
/// marker remembers are gone.
pub fn check(marker: &Marker, found: &Found) -> Option<Loss> {
    if marker.last_position == 0 {
        return None;
    }
    match &found.first_id {
        None => Some(Loss::Empty),
        Some(id) if *id != marker.first_id => Some(Loss::Replaced),
        Some(_) if found.last_position < marker.last_position => Some(Loss::Shorter),
        Some(_) => None,
    }
}

impl Marker {
    /// Whether a marker read from a file is of this format and of the
    /// store `name` (one of another store, or unreadable, is ignored: a
    /// damaged marker must never stop an open). The web layer reads the
    /// file's JSON in JavaScript, which it parses anyway to pick the
    /// latest copy (a serde parser here weighed about 2 KB of wasm).
    pub fn is_for(&self, name: &str) -> bool {
        self.format == FORMAT && self.name == name
    }
}

/// The marker's file name for a store: the name with every byte outside
/// `[A-Za-z0-9_-]` written as `%XX`, then `.json`; a long name is cut and
/// ends with a hash of the whole, so that it stays a valid file name.
pub fn file_name(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if encoded.len() > 200 {
        // FNV-1a: stable across releases, unlike std's hasher.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut cut = 150;
        while !encoded.is_char_boundary(cut) {
            cut -= 1;
        }
        encoded = format!("{}~{hash:016x}", &encoded[..cut]);
    }
    encoded.push_str(".json");
    encoded
}

/// When the marker is rewritten as pushes commit: the first events of a log
/// at once, later positions at most every [`WRITE_EVERY_MS`] (and after a
/// failed write, not before that either).
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    /// The last write failed: wait before the next, even for first events.
    pub failed: bool,
    /// The position the marker was last written with (or read with at open).
    pub written: u64,
    /// The highest position known to be committed.
    pub known: u64,
    /// When the marker was last written (ms since the epoch).
    pub written_at: f64,
}

/// What to do after a commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Due {
    /// The marker is up to date.
    Nothing,
    /// Write now.
    Now,
    /// Write after this many milliseconds (unless a write is already planned).
    After(f64),
}

impl Schedule {
    /// Notes a committed position at time `now` and says when to write.
    pub fn committed(&mut self, position: u64, now: f64) -> Due {
        self.known = self.known.max(position);
        self.due(now)
    }

    /// When to write, without a new position.
    pub fn due(&self, now: f64) -> Due {
        if self.known <= self.written {
            Due::Nothing
        } else if (self.written == 0 && !self.failed) || now - self.written_at >= WRITE_EVERY_MS {
            Due::Now
        } else {
            Due::After(WRITE_EVERY_MS - (now - self.written_at))
        }
    }

    /// Notes that the marker now says `position` (written at `now`).
    pub fn wrote(&mut self, position: u64, now: f64) {
        self.written = self.written.max(position);
        self.written_at = now;
        self.failed = false;
    }

    /// Notes a failed write at `now`: the next waits [`WRITE_EVERY_MS`].
    pub fn failed(&mut self, now: f64) {
        self.written_at = now;
        self.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: &str, last: u64) -> Marker {
        Marker {
            format: FORMAT,
            name: "app".into(),
            first_id: id.into(),
            last_position: last,
        }
    }

    fn found(id: Option<&str>, last: u64) -> Found {
        Found {
            first_id: id.map(Into::into),
            last_position: last,
        }
    }

    #[test]
    fn check_tells_each_loss() {
        assert_eq!(check(&marker("a", 5), &found(None, 0)), Some(Loss::Empty));
        assert_eq!(
            check(&marker("a", 5), &found(Some("b"), 9)),
            Some(Loss::Replaced)
        );
        assert_eq!(
            check(&marker("a", 5), &found(Some("a"), 4)),
            Some(Loss::Shorter)
        );
        assert_eq!(check(&marker("a", 5), &found(Some("a"), 5)), None);
        assert_eq!(check(&marker("a", 5), &found(Some("a"), 7)), None);
        assert_eq!(check(&marker("", 0), &found(None, 0)), None);
    }

    #[test]
    fn markers_of_other_stores_and_formats_are_refused() {
        assert!(marker("a", 3).is_for("app"));
        assert!(!marker("a", 3).is_for("other"));
        let other_format = Marker {
            format: FORMAT + 1,
            ..marker("a", 3)
        };
        assert!(!other_format.is_for("app"));
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("my-app"), "my-app.json");
        assert_eq!(file_name("a.b/c"), "a%2Eb%2Fc.json");
        assert_eq!(file_name(".."), "%2E%2E.json");
        assert_ne!(file_name("a b"), file_name("a_b"));
        let long_a = file_name(&"é".repeat(300));
        let long_b = file_name(&format!("{}x", "é".repeat(300)));
        assert!(long_a.len() < 200 && long_b.len() < 200);
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn schedule_writes_first_events_at_once_then_at_most_every_second() {
        let mut s = Schedule::default();
        assert_eq!(s.due(0.0), Due::Nothing);
        assert_eq!(s.committed(1, 10.0), Due::Now);
        s.wrote(1, 10.0);
        assert_eq!(s.committed(2, 20.0), Due::After(990.0));
        assert_eq!(s.committed(3, 1010.0), Due::Now);
        s.wrote(3, 1010.0);
        assert_eq!(s.due(5000.0), Due::Nothing);
        // A position read at open counts as written.
        let mut opened = Schedule::default();
        opened.wrote(40, 0.0);
        assert_eq!(opened.committed(41, 100.0), Due::After(900.0));
        // A failed write waits a second, even before the first success.
        let mut failing = Schedule::default();
        assert_eq!(failing.committed(1, 0.0), Due::Now);
        failing.failed(0.0);
        assert_eq!(failing.committed(2, 10.0), Due::After(990.0));
        assert_eq!(failing.due(1000.0), Due::Now);
    }

    #[test]
    fn found_reads_the_first_id_and_the_last_position() {
        use crate::storage::memory::MemoryStorage;
        use serde_json::value::RawValue;
        let storage = MemoryStorage::new();
        let empty = futures::executor::block_on(super::found(&storage)).expect("found");
        assert_eq!(
            empty,
            Found {
                first_id: None,
                last_position: 0
            }
        );
        let entries = vec![crate::push::PushEntry {
            aggregate: crate::subject::Subject::parse("user.A").expect("subject"),
            expected_sequence: None,
            commands: (0..3)
                .map(|_| crate::push::Command {
                    action: crate::subject::Subject::parse("user.A.added").expect("subject"),
                    revision: 1,
                    payload: RawValue::from_string("null".into()).expect("json"),
                })
                .collect(),
        }];
        let mut n = 0;
        futures::executor::block_on(crate::engine::push(
            &storage,
            &crate::heads::HeadCache::new(),
            &entries,
            1,
            || {
                n += 1;
                format!("id-{n}")
            },
            |_, _| Ok(()),
        ))
        .expect("push");
        let full = futures::executor::block_on(super::found(&storage)).expect("found");
        assert_eq!(
            full,
            Found {
                first_id: Some("id-1".into()),
                last_position: 3
            }
        );
    }
}
