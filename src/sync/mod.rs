//! Sync with a remote store, the pure part: the messages of the protocol
//! (`docs/sync-protocol.md`, in `protocol`), the rules a server applies
//! (`rules`: scopes, idempotency and sequence checks, pull visibility,
//! rebase) and the device's reading of push answers (`client`). The
//! reference server (`server/`) does HTTP and SQL around them; a client
//! does fetch and storage around them. Nothing here uses wasm-bindgen, and
//! it builds for wasm32.

pub mod client;
pub mod local;
pub mod protocol;
pub mod rules;
