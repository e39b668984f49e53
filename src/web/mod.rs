//! The browser edge: IndexedDB storage, JS conversions and the exported class.

mod event_store;
mod fold;
mod idb;
mod interop;
mod live;
mod marker;
mod request;
mod shred;
mod sync;
mod types;
mod upcast;
mod vault;

pub use event_store::EventStore;
pub use fold::pause_folding;
pub use idb::{pages_read_ahead, records_read, transactions_created};
pub use request::commits_early;
pub use types::OpenOptionsArg;
pub use vault::set_vault;
