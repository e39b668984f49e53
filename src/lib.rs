//! eventstore-wasm: a client-side event store for browser apps.
//!
//! An append-only log of events in IndexedDB with subject indexes, giving
//! JavaScript `push`, `filter` and a GDPR `forget` (see the README and
//! `docs/storage.md`). The modules at the root are the pure core: subjects,
//! filters and their planning, sequencing, the batch codec and the engine
//! over a [`storage::Storage`]; they compile and are tested natively. The
//! browser glue lives in `web` and is only built for `wasm32`.

pub mod batch;
pub mod engine;
pub mod error;
pub mod filter;
pub mod heads;
pub mod log;
pub mod marker;
pub mod portability;
pub mod presence;
pub mod push;
pub mod seal;
pub mod storage;
pub mod subject;
pub mod sync;

#[cfg(target_arch = "wasm32")]
mod web;

pub use error::{Error, Result};
/// Whether write transactions are committed explicitly in this engine: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::commits_early;
/// Pages reads requested ahead so far in this thread: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::pages_read_ahead;
/// Pauses background folding in this thread: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::pause_folding;
/// IndexedDB records read so far in this thread: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::records_read;
/// Hands the key vault class (js/vault.js) to the wasm side: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::set_vault;
/// IndexedDB transactions created so far in this thread: for tests.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use web::transactions_created;
#[cfg(target_arch = "wasm32")]
pub use web::{EventStore, OpenOptionsArg};
