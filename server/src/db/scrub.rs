//! What happens on disk after a forget (`--scrub-forgotten`, and
//! `docs/privacy.md`): the database's own files keep no copy of an erased
//! payload.
//!
//! - SQLite: every connection runs with `PRAGMA secure_delete = ON`, so the
//!   bytes a forget frees in a page (and whole freed pages) are zeroed, and
//!   each forget ends with `PRAGMA wal_checkpoint(TRUNCATE)`, which copies
//!   the zeroed pages into the database file and empties the WAL that held
//!   the older frames. The forget answers only once that checkpoint
//!   completed (a few bounded tries; else `DbError::Unavailable`, and the
//!   client's retry of the same forget id tries again).
//! - PostgreSQL: an UPDATE leaves the old tuple in the heap. A background
//!   task of each instance runs `VACUUM (FULL) events` (or a plain
//!   `VACUUM`) after forgets, debounced, under an advisory lock so that one
//!   instance at a time vacuums, and records in `scrubbed` the last forget
//!   it covered, so that instances skip a vacuum another already did and a
//!   restarted server catches up after a crash. It waits while a
//!   transaction older than the forget is open anywhere in the cluster:
//!   VACUUM keeps the rows such a transaction could still see.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Executor;
use tokio::sync::Notify;

use super::DbError;

/// What the server does on disk after a forget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scrub {
    /// SQLite: secure_delete and a WAL checkpoint after each forget.
    /// PostgreSQL: `VACUUM (FULL) events` after forgets (debounced; takes
    /// an exclusive lock on the table while it rewrites it).
    #[default]
    Full,
    /// SQLite: as `full`. PostgreSQL: a plain `VACUUM events` (no exclusive
    /// lock, but erased bytes may stay in the pages' free space until reused).
    Vacuum,
    /// Nothing: erasure is logical; old bytes stay in free space and the WAL.
    Off,
}

/// Tries of a SQLite checkpoint (each waits up to the busy timeout for readers).
const CHECKPOINT_TRIES: u32 = 3;

/// `PRAGMA wal_checkpoint(TRUNCATE)` until it completes, a bounded number
/// of times. A reader of an older snapshot makes it return busy (after the
/// busy handler waited); readers here are single statements, so it passes
/// on a later try.
pub(super) async fn sqlite_checkpoint(pool: &sqlx::SqlitePool) -> Result<(), DbError> {
    let mut last = (0, 0, 0);
    for attempt in 0..CHECKPOINT_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        // (busy, frames in the WAL, frames checkpointed); -1 when not in WAL mode.
        last = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
        if last.0 == 0 {
            return Ok(());
        }
        tracing::debug!(attempt, ?last, "WAL checkpoint busy");
    }
    Err(DbError::Unavailable(format!(
        "the WAL checkpoint after a forget could not complete in {CHECKPOINT_TRIES} tries (busy, log, checkpointed = {last:?}): erased bytes may still be in the WAL; retry the forget"
    )))
}

/// The advisory lock key of the vacuum (any constant; "es-scrub").
const VACUUM_LOCK: i64 = 0x6573_2d73_6372_7562;

/// How long forgets are gathered before one vacuum covers them all.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// How long a `VACUUM FULL` waits for its exclusive lock before it gives
/// up and tries later (meanwhile it would queue every push and pull).
const LOCK_TIMEOUT: &str = "2s";

/// Wakes the vacuum task of a PostgreSQL database.
pub(super) struct Vacuumer {
    wake: Arc<Notify>,
}

impl Vacuumer {
    /// Starts the task (which vacuums once at start if a forget was not yet covered).
    pub(super) fn start(pool: sqlx::PgPool, full: bool) -> Self {
        let wake = Arc::new(Notify::new());
        wake.notify_one();
        tokio::spawn(run(pool, full, wake.clone()));
        Vacuumer { wake }
    }

    /// A forget erased something: vacuum soon.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The task: after each wake (coalesced over [`DEBOUNCE`]), one pass, retried with backoff.
async fn run(pool: sqlx::PgPool, full: bool, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = pool.close_event() => return,
        }
        if !pause(&pool, DEBOUNCE).await {
            return;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match pass(&pool, full).await {
                Ok(Pass::Done) => break,
                Ok(Pass::Locked) => tracing::debug!("another instance is vacuuming; trying later"),
                Ok(Pass::Held(n)) => tracing::info!(
                    holders = n,
                    ?backoff,
                    "a transaction, replication slot or prepared transaction older than a forget would keep its erased rows through a VACUUM; trying later"
                ),
                Err(e) if pool.is_closed() => {
                    tracing::debug!(error = %e, "vacuum stopped: the pool closed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "vacuum after forget failed; trying later")
                }
            }
            if !pause(&pool, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

/// Sleeps `time`; `false` if the pool closed meanwhile (the server stops).
async fn pause(pool: &sqlx::PgPool, time: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(time) => !pool.is_closed(),
        _ = pool.close_event() => false,
    }
}

/// How a pass ended.
enum Pass {
    /// Every forget recorded so far is covered.
    Done,
    /// Another instance holds the vacuum lock.
    Locked,
    /// This many transactions, slots or prepared transactions could still
    /// see rows a forget erased: a VACUUM now would keep them (VACUUM FULL
    /// copies such "recently dead" rows, payloads included, to the new file).
    Held(i64),
}

/// A new transaction id (as 32-bit `xid` text): every forget committed
/// before it has an older one.
const NEW_XID: &str = "SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text";

/// Sessions, replication slots (`hot_standby_feedback` shows as a
/// walsender's `backend_xmin`) and prepared transactions whose snapshot or
/// transaction is older than the xid `$1`. Once none is, none can be again
/// (a new snapshot's horizon is the oldest running xid), so a VACUUM then
/// removes every row version the forgets before `$1` erased.
/// Conservative: the whole cluster counts, not only this database.
const HORIZON_HOLDERS: &str = "
SELECT
  (SELECT count(*) FROM pg_stat_activity
    WHERE pid <> pg_backend_pid()
      AND (age(backend_xmin) > age($1::text::xid) OR age(backend_xid) > age($1::text::xid)))
+ (SELECT count(*) FROM pg_replication_slots WHERE age(xmin) > age($1::text::xid))
+ (SELECT count(*) FROM pg_prepared_xacts WHERE age(transaction) > age($1::text::xid))";

/// How long a pass waits for older transactions (pushes and pulls of the
/// moment) to end before it gives up until the next try.
const HORIZON_WAIT: Duration = Duration::from_secs(5);

/// One vacuum if a forget is not yet covered.
async fn pass(pool: &sqlx::PgPool, full: bool) -> Result<Pass, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(VACUUM_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Pass::Locked);
    }
    let done = vacuum_locked(&mut conn, full).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(VACUUM_LOCK)
        .execute(&mut *conn)
        .await;
    let done = done?;
    unlocked?;
    Ok(done)
}

async fn vacuum_locked(conn: &mut sqlx::PgConnection, full: bool) -> Result<Pass, sqlx::Error> {
    // Forgets that erased nothing new record `[]` and need no vacuum.
    let target: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM forgets WHERE events <> '[]'")
            .fetch_one(&mut *conn)
            .await?;
    let covered: i64 = sqlx::query_scalar("SELECT position FROM scrubbed WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    if target <= covered {
        return Ok(Pass::Done);
    }
    // Taken after `target` was read: every forget up to it committed before.
    let xid: String = sqlx::query_scalar(NEW_XID).fetch_one(&mut *conn).await?;
    let waiting = std::time::Instant::now();
    loop {
        let holders: i64 = sqlx::query_scalar(HORIZON_HOLDERS)
            .bind(&xid)
            .fetch_one(&mut *conn)
            .await?;
        if holders == 0 {
            break;
        }
        if waiting.elapsed() >= HORIZON_WAIT {
            return Ok(Pass::Held(holders));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    conn.execute(format!("SET lock_timeout = '{LOCK_TIMEOUT}'").as_str())
        .await?;
    // Not in a transaction: VACUUM refuses to run inside one.
    let vacuumed = conn
        .execute(if full {
            "VACUUM (FULL) events"
        } else {
            "VACUUM events"
        })
        .await;
    conn.execute("RESET lock_timeout").await?;
    vacuumed?;
    sqlx::query("UPDATE scrubbed SET position = $1 WHERE id = 1 AND position < $1")
        .bind(target)
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        full,
        through = target,
        ms = started.elapsed().as_millis() as u64,
        "vacuumed events after forget"
    );
    Ok(Pass::Done)
}
