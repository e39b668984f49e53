//! The one error type of the core, with the stable codes of SPEC section 6.

use std::fmt;

/// Everything that can go wrong in eventstore-wasm. Each variant maps to one
/// stable `code` (see [`Error::code`]) that JavaScript sees on the rejected
/// `Error`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A subject or pattern breaks the grammar (SPEC section 2).
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject { subject: String, reason: String },
    /// A payload is not a JSON value.
    #[error("invalid payload {at}: {reason}")]
    InvalidPayload { at: String, reason: String },
    /// Any other malformed argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// An `expectedSequence` did not match the aggregate's sequence.
    #[error("sequence mismatch on aggregate {aggregate:?}: expected {expected}, actual {actual}")]
    SequenceMismatch {
        aggregate: String,
        expected: u64,
        actual: u64,
    },
    /// The browser refused the write for lack of storage; nothing was written.
    #[error("storage quota exceeded, nothing was written: {0}")]
    QuotaExceeded(String),
    /// The store was closed (by `close()` or because another tab upgraded or deleted the database).
    #[error("the store is closed: {0}")]
    Closed(String),
    /// The database was written by a newer, incompatible version of the library.
    /// `found` and `supported` name what differs: "schema version 6"
    /// against "schema version 5", or an encryption format.
    #[error("database {name:?} has {found}, this library supports up to {supported}: upgrade eventstore-wasm")]
    VersionMismatch {
        name: String,
        found: String,
        supported: String,
    },
    /// On open: events this origin had written are gone (the browser reset
    /// the database, as Chromium does after an I/O error such as a full
    /// disk), and no `onDataLost` option was given.
    #[error("database {name:?} lost events: it held events up to position {last_position}, now it {found} ({reason}); the browser reset it (for example after a full disk). Pass `onDataLost` to `EventStore.open` to be told and open what is left")]
    DataLost {
        name: String,
        /// The last position the marker remembers.
        last_position: u64,
        /// The last position found now (0: empty).
        position: u64,
        /// `empty`, `replaced` or `shorter` (see `marker::Loss`).
        reason: &'static str,
        /// How the database was found, for the message.
        found: String,
    },
    /// A sync request failed for a reason other than a conflict (an
    /// unreachable or refusing server, another log, a broken answer).
    #[error("sync: {0}")]
    Sync(String),
    /// Any other storage failure; carries the browser's own message.
    #[error("storage error: {0}")]
    Storage(String),
    /// A write broke a uniqueness rule of the storage (a key or a unique
    /// index): another writer got there first. An optimistic push retries
    /// on it (see `engine::push`); anywhere else it is a `STORAGE` error.
    #[error("storage error: {0}")]
    Constraint(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable error code JavaScript sees as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidSubject { .. } => "INVALID_SUBJECT",
            Error::InvalidPayload { .. } => "INVALID_PAYLOAD",
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::SequenceMismatch { .. } => "SEQUENCE_MISMATCH",
            Error::QuotaExceeded(_) => "QUOTA_EXCEEDED",
            Error::Closed(_) => "CLOSED",
            Error::VersionMismatch { .. } => "VERSION_MISMATCH",
            Error::DataLost { .. } => "DATA_LOST",
            Error::Sync(_) => "SYNC",
            Error::Storage(_) | Error::Constraint(_) => "STORAGE",
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn argument(message: impl fmt::Display) -> Self {
        Error::InvalidArgument(message.to_string())
    }

    /// Shorthand for [`Error::InvalidSubject`].
    pub fn subject(subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSubject {
            subject: subject.into(),
            reason: reason.into(),
        }
    }
}
