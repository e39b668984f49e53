//! The database layer: one [`Database`] trait, implemented on SQLite and
//! on PostgreSQL (`sql.rs`, one body of SQL for both). Every write runs in
//! one transaction that first takes the log's append point (the `meta`
//! row), then applies the core's rules (`eventstore_wasm::sync::rules`).

mod scrub;
mod sql;

use async_trait::async_trait;
use eventstore_wasm::sync::protocol::{
    Conflict, EventResult, ForgetFilter, ForgetResponse, WireEvent,
};
use eventstore_wasm::sync::rules::{Page, Scope};

pub use scrub::Scrub;
pub use sql::{open, Postgres, Sqlite};

/// What a push did.
#[derive(Debug)]
pub enum PushOutcome {
    /// Every event not held before was written.
    Written {
        results: Vec<EventResult>,
        head: u64,
    },
    /// Nothing was written: these aggregates moved on.
    Conflict {
        results: Vec<EventResult>,
        conflicts: Vec<Conflict>,
    },
}

/// What a forget did.
#[derive(Debug)]
pub enum ForgetOutcome {
    /// Erased (or, for a retried id, erased before).
    Done { answer: ForgetResponse, head: u64 },
    /// Nothing erased: a matching event's aggregate is outside the token's forget patterns.
    Forbidden { aggregate: String },
    /// Nothing erased: more matching events than one forget may erase.
    TooLarge { count: usize },
}

/// A database failure; the request may be retried.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbError::Unavailable(e.to_string())
            }
            e => DbError::Internal(e.to_string()),
        }
    }
}

/// The server's log in a database.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// The log's id, made when the database was created.
    fn log(&self) -> &str;

    /// The last position given out.
    async fn head(&self) -> Result<u64, DbError>;

    /// Settles and (when nothing conflicts) writes a push whose events the
    /// token may all push, in one transaction. `scope` decides which
    /// remote events a conflict shows.
    async fn push(&self, events: &[WireEvent], scope: &Scope) -> Result<PushOutcome, DbError>;

    /// Up to `limit` items after `after` that the scope sees.
    async fn pull(&self, after: u64, limit: usize, scope: &Scope) -> Result<Page, DbError>;

    /// Erases the payloads of the events matching `filter` and records the
    /// forget as `id`, in one transaction; a known `id` answers as before.
    /// Then removes the erased bytes from the files as `--scrub-forgotten`
    /// says (`scrub.rs`): on SQLite before answering, on PostgreSQL soon after.
    async fn forget(
        &self,
        id: &str,
        filter: &ForgetFilter,
        scope: &Scope,
    ) -> Result<ForgetOutcome, DbError>;

    /// The last position published to NATS (`--nats`).
    async fn published(&self) -> Result<u64, DbError>;

    /// Records that everything up to `position` was published to NATS.
    async fn set_published(&self, position: u64) -> Result<(), DbError>;

    /// Wakes `head` on writes of other server instances on the same
    /// database, where the database can tell (PostgreSQL's LISTEN/NOTIFY);
    /// long polls otherwise look every 250 ms.
    fn watch_others(&self, _head: tokio::sync::watch::Sender<u64>) {}

    /// Closes the connections.
    async fn close(&self);
}

/// A database URL with its password replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://ada:s3cr@t@db:5432/x"),
            "postgres://ada:***@db:5432/x"
        );
        assert_eq!(redact("postgres://ada@db/x"), "postgres://ada@db/x");
        assert_eq!(redact("sqlite://file.db"), "sqlite://file.db");
        assert_eq!(redact("sqlite:///a:b@c/d"), "sqlite:///a:b@c/d");
    }
}
