//! The [`Database`] on SQLite and on PostgreSQL. The SQL is the same for
//! both (numbered `$n` parameters, `RETURNING`, `ON CONFLICT`); a macro
//! writes the implementation once per driver, since sqlx's generic
//! executor bounds would hide the logic under trait bounds.
//!
//! The append point: every write transaction starts with
//! `UPDATE meta SET head = head WHERE id = 1 RETURNING head`. On
//! PostgreSQL this row lock is held to commit, so writers (of every server
//! instance on the database) take positions one transaction at a time and
//! commit in position order: a reader never sees a position before all
//! lower ones are visible, and positions have no gaps. On SQLite the
//! transaction is `BEGIN IMMEDIATE`, which takes the database's one write
//! lock at once.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use eventstore_wasm::subject::{KeyRange, Subject};
use eventstore_wasm::sync::protocol::{
    Column, ForgetFilter, ForgetResponse, WireEvent, WireSubject, MAX_CONFLICT_EVENTS,
    MAX_FORGET_EVENTS, MAX_PULL_BYTES,
};
use eventstore_wasm::sync::rules::{self, Held, LogRow, Page, PushPlan, Scope};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use super::scrub::{self, Scrub, Vacuumer};
use super::{Database, DbError, ForgetOutcome, PushOutcome};

/// The PostgreSQL channel on which writers announce their new head.
const NOTIFY_CHANNEL: &str = "eventstore_head";

/// Rows a pull reads at most per request, whatever the token sees of them.
const SCAN_BUDGET: usize = 10_000;

/// Creates the `meta` row with a new log id unless one exists, and reads the id.
macro_rules! init_log {
    ($pool:expr) => {{
        sqlx::query(
            "INSERT INTO meta (id, log, head) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&$pool)
        .await?;
        let log: String = sqlx::query_scalar("SELECT log FROM meta WHERE id = 1")
            .fetch_one(&$pool)
            .await?;
        log
    }};
}

/// Opens (creating if needed) the database of a `sqlite:` or `postgres:` URL
/// and runs its migrations; `scrub` says what a forget does on disk.
pub async fn open(url: &str, scrub: Scrub) -> Result<Box<dyn Database>, DbError> {
    if url.starts_with("sqlite:") {
        Ok(Box::new(Sqlite::open(url, scrub).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Box::new(Postgres::open(url, scrub).await?))
    } else {
        Err(DbError::Internal(format!(
            "unsupported database URL {:?}: use sqlite://FILE or postgres://…",
            super::redact(url)
        )))
    }
}

/// The log in a SQLite file.
pub struct Sqlite {
    pool: sqlx::SqlitePool,
    log: String,
    /// Writers of this process queue here rather than in SQLite's busy handler.
    write: tokio::sync::Mutex<()>,
    /// secure_delete is on and each forget ends with a WAL checkpoint.
    scrub: bool,
}

impl Sqlite {
    async fn open(url: &str, scrub: Scrub) -> Result<Self, DbError> {
        let scrub = scrub != Scrub::Off;
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // Per connection: freed cells and pages are zeroed.
            .pragma("secure_delete", if scrub { "ON" } else { "OFF" });
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| DbError::Internal(e.to_string()))?;
        let log = init_log!(pool);
        let db = Sqlite {
            pool,
            log,
            write: tokio::sync::Mutex::new(()),
            scrub,
        };
        // A crash between a forget's commit and its checkpoint left frames
        // in the WAL: this one removes them (or the next forget's will).
        if let Err(e) = db.scrub_after_forget(true).await {
            tracing::warn!(error = %e, "WAL checkpoint at start");
        }
        Ok(db)
    }

    /// After a forget committed (and while this process's writers wait):
    /// the WAL checkpoint that leaves no old frame behind.
    async fn scrub_after_forget(&self, erased: bool) -> Result<(), DbError> {
        if self.scrub && erased {
            scrub::sqlite_checkpoint(&self.pool).await?;
        }
        Ok(())
    }
}

/// The log in PostgreSQL, shared by every server instance on the database.
pub struct Postgres {
    pool: sqlx::PgPool,
    log: String,
    /// Unused: instances serialize on the `meta` row.
    write: NoLock,
    /// The task that vacuums after forgets (none with `--scrub-forgotten off`).
    vacuum: Option<Vacuumer>,
}

impl Postgres {
    async fn open(url: &str, scrub: Scrub) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| DbError::Internal(e.to_string()))?;
        let log = init_log!(pool);
        let vacuum = match scrub {
            Scrub::Off => None,
            Scrub::Full => Some(Vacuumer::start(pool.clone(), true)),
            Scrub::Vacuum => Some(Vacuumer::start(pool.clone(), false)),
        };
        Ok(Postgres {
            pool,
            log,
            write: NoLock,
            vacuum,
        })
    }

    /// After a forget committed: wakes the vacuum task (which runs outside
    /// any transaction, later, debounced).
    async fn scrub_after_forget(&self, erased: bool) -> Result<(), DbError> {
        if let (Some(v), true) = (&self.vacuum, erased) {
            v.wake();
        }
        Ok(())
    }
}

/// A lock that is no lock (PostgreSQL serializes in the database).
struct NoLock;

impl NoLock {
    async fn lock(&self) {}
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn subject(dotted: &str) -> Result<WireSubject, DbError> {
    Subject::parse(dotted)
        .map(WireSubject)
        .map_err(|e| DbError::Internal(format!("stored subject: {e}")))
}

/// An event from a row of `events` (columns as [`EVENT_COLUMNS`]).
fn event_from<R: Row>(row: &R) -> Result<WireEvent, DbError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let payload: Option<String> = row.try_get("payload")?;
    let forgotten: bool = row.try_get("forgotten")?;
    let payload = match payload {
        Some(text) if !forgotten => RawValue::from_string(text)
            .map_err(|e| DbError::Internal(format!("stored payload: {e}")))?,
        _ => RawValue::from_string("null".into()).map_err(|e| DbError::Internal(e.to_string()))?,
    };
    let revision: i64 = row.try_get("revision")?;
    Ok(WireEvent {
        id: row.try_get("id")?,
        aggregate: subject(&row.try_get::<String, _>("aggregate")?)?,
        action: subject(&row.try_get::<String, _>("action")?)?,
        revision: u16::try_from(revision).unwrap_or(u16::MAX),
        sequence: to_u64(row.try_get("sequence")?),
        created_at: to_u64(row.try_get("created_at")?),
        payload,
        forgotten,
        position: Some(to_u64(row.try_get("position")?)),
    })
}

const EVENT_COLUMNS: &str =
    "position, id, aggregate, action, CAST(revision AS BIGINT) AS revision, sequence, created_at, payload, forgotten";

/// The body of [`Database`] for one sqlx driver.
macro_rules! database {
    ($name:ident, $begin:expr, $notify:expr, $($extra:item)*) => {
        #[async_trait]
        impl Database for $name {
            fn log(&self) -> &str {
                &self.log
            }

            async fn head(&self) -> Result<u64, DbError> {
                let head: i64 = sqlx::query_scalar("SELECT head FROM meta WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(to_u64(head))
            }

            async fn push(
                &self,
                events: &[WireEvent],
                scope: &Scope,
            ) -> Result<PushOutcome, DbError> {
                let _queue = self.write.lock().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let head: i64 =
                    sqlx::query_scalar("UPDATE meta SET head = head WHERE id = 1 RETURNING head")
                        .fetch_one(&mut *tx)
                        .await?;
                let mut held = HashMap::new();
                for e in events {
                    let row = sqlx::query("SELECT position, sequence FROM events WHERE id = $1")
                        .bind(&e.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(row) = row {
                        held.insert(
                            e.id.clone(),
                            Held {
                                position: to_u64(row.try_get("position")?),
                                sequence: to_u64(row.try_get("sequence")?),
                            },
                        );
                    }
                }
                let mut heads = HashMap::new();
                for aggregate in rules::aggregates_to_check(events, &held) {
                    let h: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE aggregate = $1",
                    )
                    .bind(aggregate)
                    .fetch_one(&mut *tx)
                    .await?;
                    heads.insert(aggregate.to_owned(), to_u64(h));
                }
                match rules::plan_push(events, &held, &heads) {
                    PushPlan::Conflict(at) => {
                        let mut conflicts = Vec::new();
                        for c in &at {
                            let rows = sqlx::query(&format!(
                                "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
                            ))
                            .bind(c.aggregate.as_str())
                            .bind(to_i64(c.expected))
                            .bind((MAX_CONFLICT_EVENTS + 1) as i64)
                            .fetch_all(&mut *tx)
                            .await?;
                            let remote = rows.iter().map(event_from).collect::<Result<Vec<_>, _>>()?;
                            conflicts.push(rules::conflict_answer(c, remote, scope, MAX_CONFLICT_EVENTS));
                        }
                        tx.rollback().await?;
                        Ok(PushOutcome::Conflict {
                            results: rules::conflict_results(events, &held, &at),
                            conflicts,
                        })
                    }
                    PushPlan::Write(written) => {
                        let first = to_u64(head) + 1;
                        for (k, &i) in written.iter().enumerate() {
                            let e = &events[i];
                            sqlx::query(
                                "INSERT INTO events (position, id, aggregate, action, revision, sequence, created_at, payload, forgotten) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                            )
                            .bind(to_i64(first + k as u64))
                            .bind(&e.id)
                            .bind(e.aggregate.0.as_str())
                            .bind(e.action.0.as_str())
                            .bind(i32::from(e.revision))
                            .bind(to_i64(e.sequence))
                            .bind(to_i64(e.created_at))
                            .bind((!e.forgotten).then(|| e.payload.get()))
                            .bind(e.forgotten)
                            .execute(&mut *tx)
                            .await?;
                        }
                        let new_head = to_u64(head) + written.len() as u64;
                        if !written.is_empty() {
                            sqlx::query("UPDATE meta SET head = $1 WHERE id = 1")
                                .bind(to_i64(new_head))
                                .execute(&mut *tx)
                                .await?;
                            if let Some(notify) = $notify {
                                // Delivered at commit, to every instance listening.
                                sqlx::query(notify)
                                    .bind(new_head.to_string())
                                    .execute(&mut *tx)
                                    .await?;
                            }
                        }
                        tx.commit().await?;
                        Ok(PushOutcome::Written {
                            results: rules::accepted_results(events, &held, &written, first),
                            head: new_head,
                        })
                    }
                }
            }

            async fn pull(&self, after: u64, limit: usize, scope: &Scope) -> Result<Page, DbError> {
                // The head first: rows up to it are committed (it moves in
                // their transaction), so the two reads below agree even
                // where each statement has its own snapshot (PostgreSQL's
                // READ COMMITTED) and a write commits between them.
                let mut tx = self.pool.begin().await?;
                let head: i64 = sqlx::query_scalar("SELECT head FROM meta WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                // Chunks of rows until the page is full (count or bytes), the
                // log ends, or the scan budget is spent.
                let mut page = Page {
                    items: Vec::new(),
                    cursor: after,
                    more: false,
                    bytes: 0,
                };
                let mut scanned = 0;
                loop {
                    let want = limit - page.items.len();
                    let chunk = want.max(500);
                    let events = sqlx::query(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
                    ))
                    .bind(to_i64(page.cursor))
                    .bind(head)
                    .bind((chunk + 1) as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    let forgets = sqlx::query(
                        "SELECT position, id, events FROM forgets WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
                    )
                    .bind(to_i64(page.cursor))
                    .bind(head)
                    .bind((chunk + 1) as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut rows = Vec::with_capacity(events.len() + forgets.len());
                    for row in &events {
                        rows.push(LogRow::Event(event_from(row)?));
                    }
                    for row in &forgets {
                        let text: String = row.try_get("events")?;
                        let erased: Vec<(String, String)> = serde_json::from_str(&text)
                            .map_err(|e| DbError::Internal(format!("stored forget: {e}")))?;
                        rows.push(LogRow::Forget(rules::ForgetRecord {
                            position: to_u64(row.try_get("position")?),
                            id: row.try_get("id")?,
                            events: erased,
                        }));
                    }
                    rows.sort_by_key(|r| match r {
                        LogRow::Event(e) => e.position.unwrap_or(0),
                        LogRow::Forget(f) => f.position,
                    });
                    let cut = rows.len() > chunk;
                    rows.truncate(chunk);
                    scanned += rows.len();
                    let next = rules::page(
                        rows,
                        page.cursor,
                        scope,
                        want,
                        MAX_PULL_BYTES.saturating_sub(page.bytes),
                        cut,
                    );
                    page.items.extend(next.items);
                    page.cursor = next.cursor;
                    page.more = next.more;
                    page.bytes += next.bytes;
                    let full = page.items.len() >= limit || page.bytes >= MAX_PULL_BYTES;
                    if full || !page.more || scanned >= SCAN_BUDGET {
                        break;
                    }
                }
                tx.commit().await?;
                Ok(page)
            }

            async fn forget(
                &self,
                id: &str,
                filter: &ForgetFilter,
                scope: &Scope,
            ) -> Result<ForgetOutcome, DbError> {
                let _queue = self.write.lock().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let head: i64 =
                    sqlx::query_scalar("UPDATE meta SET head = head WHERE id = 1 RETURNING head")
                        .fetch_one(&mut *tx)
                        .await?;
                let known = sqlx::query("SELECT position, events FROM forgets WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = known {
                    tx.rollback().await?;
                    let text: String = row.try_get("events")?;
                    let erased: Vec<(String, String)> = serde_json::from_str(&text)
                        .map_err(|e| DbError::Internal(format!("stored forget: {e}")))?;
                    // A retry after a checkpoint that could not complete tries again.
                    self.scrub_after_forget(!erased.is_empty()).await?;
                    return Ok(ForgetOutcome::Done {
                        answer: ForgetResponse {
                            log: self.log.clone(),
                            id: id.to_owned(),
                            position: to_u64(row.try_get("position")?),
                            events: erased.into_iter().map(|(id, _)| id).collect(),
                        },
                        head: to_u64(head),
                    });
                }
                const META: &str =
                    "SELECT position, id, aggregate, action, sequence, created_at, forgotten FROM events";
                let mut rows = Vec::new();
                match filter.candidates() {
                    None => {
                        rows = sqlx::query(META).fetch_all(&mut *tx).await?;
                    }
                    Some(ranges) => {
                        for (column, range) in ranges {
                            let column = match column {
                                Column::Aggregate => "aggregate",
                                Column::Action => "action",
                            };
                            let (lo, hi) = range.bounds();
                            let found = match range {
                                KeyRange::Exact(_) => {
                                    let sql = format!("{META} WHERE {column} = $1");
                                    sqlx::query(&sql).bind(lo).fetch_all(&mut *tx).await?
                                }
                                KeyRange::Prefix(_) => {
                                    let sql =
                                        format!("{META} WHERE {column} >= $1 AND {column} < $2");
                                    sqlx::query(&sql).bind(lo).bind(hi).fetch_all(&mut *tx).await?
                                }
                            };
                            rows.extend(found);
                        }
                    }
                }
                let mut matching = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for row in &rows {
                    let aggregate: String = row.try_get("aggregate")?;
                    let action: String = row.try_get("action")?;
                    let position = to_u64(row.try_get("position")?);
                    if seen.insert(position) && filter.matches(
                        &aggregate,
                        &action,
                        to_u64(row.try_get("sequence")?),
                        to_u64(row.try_get("created_at")?),
                        position,
                    ) {
                        let forgotten: bool = row.try_get("forgotten")?;
                        matching.push((row.try_get::<String, _>("id")?, aggregate, position, forgotten));
                    }
                }
                if let Some(aggregate) =
                    rules::forget_forbidden(matching.iter().map(|m| m.1.as_str()), scope)
                {
                    let aggregate = aggregate.to_owned();
                    tx.rollback().await?;
                    return Ok(ForgetOutcome::Forbidden { aggregate });
                }
                matching.sort_by_key(|m| m.2);
                let erase: Vec<&(String, String, u64, bool)> =
                    matching.iter().filter(|m| !m.3).collect();
                if erase.len() > MAX_FORGET_EVENTS {
                    tx.rollback().await?;
                    return Ok(ForgetOutcome::TooLarge { count: erase.len() });
                }
                for m in &erase {
                    sqlx::query("UPDATE events SET payload = NULL, forgotten = TRUE WHERE position = $1")
                        .bind(to_i64(m.2))
                        .execute(&mut *tx)
                        .await?;
                }
                let erased: Vec<(&str, &str)> =
                    erase.iter().map(|m| (m.0.as_str(), m.1.as_str())).collect();
                let text = serde_json::to_string(&erased)
                    .map_err(|e| DbError::Internal(e.to_string()))?;
                let position = to_u64(head) + 1;
                sqlx::query("INSERT INTO forgets (position, id, events) VALUES ($1, $2, $3)")
                    .bind(to_i64(position))
                    .bind(id)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE meta SET head = $1 WHERE id = 1")
                    .bind(to_i64(position))
                    .execute(&mut *tx)
                    .await?;
                if let Some(notify) = $notify {
                    sqlx::query(notify)
                        .bind(position.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                self.scrub_after_forget(!erase.is_empty()).await?;
                Ok(ForgetOutcome::Done {
                    answer: ForgetResponse {
                        log: self.log.clone(),
                        id: id.to_owned(),
                        position,
                        events: erase.iter().map(|m| m.0.clone()).collect(),
                    },
                    head: position,
                })
            }

            async fn published(&self) -> Result<u64, DbError> {
                let position: i64 = sqlx::query_scalar("SELECT position FROM published WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(to_u64(position))
            }

            async fn set_published(&self, position: u64) -> Result<(), DbError> {
                sqlx::query("UPDATE published SET position = $1 WHERE id = 1")
                    .bind(to_i64(position))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            $($extra)*
        }
    };
}

database!(Sqlite, "BEGIN IMMEDIATE", None::<&str>,);
database!(
    Postgres,
    "BEGIN",
    Some("SELECT pg_notify('eventstore_head', $1)"),
    fn watch_others(&self, head: tokio::sync::watch::Sender<u64>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "no LISTEN connection: long polls look every 250 ms");
                    return;
                }
            };
            if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed: long polls look every 250 ms");
                return;
            }
            // recv() reconnects by itself; it fails once the pool is closed.
            while let Ok(n) = listener.recv().await {
                if let Ok(position) = n.payload().parse::<u64>() {
                    head.send_if_modified(|h| {
                        let newer = position > *h;
                        if newer {
                            *h = position;
                        }
                        newer
                    });
                }
            }
        });
    }
);
