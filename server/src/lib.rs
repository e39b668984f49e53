//! eventstore-server: the reference sync server of eventstore-wasm
//! (`docs/sync-protocol.md`), JSON over HTTP on SQLite or PostgreSQL.
//!
//! The rules (sequencing, idempotency, token scopes, pull visibility) are
//! the core's (`eventstore_wasm::sync`); this crate only does HTTP (`api`)
//! and SQL (`db`).
#![forbid(unsafe_code)]

pub mod api;
pub mod db;
pub mod nats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::HeaderValue;
use clap::Parser;
use eventstore_wasm::sync::rules::Tokens;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Command line and environment of `eventstore-server`.
#[derive(Clone, Parser)]
#[command(name = "eventstore-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "EVENTSTORE_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// `sqlite://FILE` (created if missing; `sqlite:///ABS/PATH` for an absolute path) or `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://eventstore-server.db"
    )]
    pub database: String,
    /// JSON file of tokens and their aggregate patterns; without it everyone may do everything.
    #[arg(long, env = "EVENTSTORE_AUTH")]
    pub auth: Option<PathBuf>,
    /// An origin allowed by CORS (repeatable), e.g. `http://localhost:5173`.
    #[arg(long = "allow-origin")]
    pub allow_origin: Vec<String>,
    /// Publish every accepted event to this NATS server (`nats://HOST:PORT`),
    /// under its action subject with its id as `Nats-Msg-Id`.
    #[arg(long, env = "NATS_URL")]
    pub nats: Option<String>,
    /// What a forget does on disk (docs/privacy.md): `full` leaves no copy
    /// of an erased payload in the database's files (SQLite: secure_delete
    /// and a WAL checkpoint before the forget answers; PostgreSQL: VACUUM
    /// FULL of the events table soon after, which locks it while it
    /// rewrites it), `vacuum` (PostgreSQL: a plain VACUUM, without that
    /// lock, which leaves erased bytes in free space), `off` (logical
    /// erasure only; old bytes stay in free space and the WAL).
    #[arg(
        long,
        env = "EVENTSTORE_SCRUB_FORGOTTEN",
        value_enum,
        default_value = "full"
    )]
    pub scrub_forgotten: db::Scrub,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &db::redact(&self.database))
            .field("auth", &self.auth)
            .field("allow_origin", &self.allow_origin)
            .field("nats", &self.nats.as_deref().map(nats::address))
            .field("scrub_forgotten", &self.scrub_forgotten)
            .finish()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the auth file {path}: {reason}")]
    Auth { path: PathBuf, reason: String },
    #[error("invalid --allow-origin {0:?}")]
    Origin(String),
    #[error("{0}")]
    Database(#[from] db::DbError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// A started server: where it listens, and how to stop it.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops accepting, answers the long polls at once, waits for the
    /// requests in flight and closes the database.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Waits until the server ends (after a stop signal).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// A sender that stops the server when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Opens the database, binds `--listen` and serves in a task.
pub async fn start(config: &Config) -> Result<Server, StartError> {
    let tokens = match &config.auth {
        None => {
            tracing::warn!(
                "no --auth file: every client may push, pull and forget every aggregate"
            );
            None
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| StartError::Auth {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let tokens = Tokens::parse(&text).map_err(|reason| StartError::Auth {
                path: path.clone(),
                reason,
            })?;
            tracing::info!(tokens = tokens.len(), path = %path.display(), "auth file read");
            Some(tokens)
        }
    };
    let origins = config
        .allow_origin
        .iter()
        .map(|o| HeaderValue::from_str(o).map_err(|_| StartError::Origin(o.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let database = db::open(&config.database, config.scrub_forgotten).await?;
    tracing::info!(database = %db::redact(&config.database), log = database.log(), "database open");
    let head = database.head().await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    let (stop, closing) = watch::channel(false);
    let head = watch::Sender::new(head);
    database.watch_others(head.clone());
    let state = Arc::new(api::AppState {
        db: database,
        tokens,
        head,
        closing: closing.clone(),
    });
    let app = api::router(state.clone(), &origins);
    let publisher = config
        .nats
        .clone()
        .map(|url| tokio::spawn(nats::run(state.clone(), url)));
    tracing::info!(%addr, "listening");
    let mut signal = closing;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|closing| *closing).await;
            })
            .await;
        if let Some(p) = publisher {
            let _ = p.await;
        }
        state.db.close().await;
        tracing::info!("stopped");
        served
    });
    Ok(Server { addr, stop, task })
}
