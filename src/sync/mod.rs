//! Sync with a remote store, the pure part: the messages of the protocol
//! (`docs/sync-protocol.md`) and the rules both ends apply. The reference
//! server (`server/`) does HTTP and SQL around them; a client does fetch
//! and storage around them.

pub mod protocol;
pub mod rules;
