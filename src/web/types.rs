//! The names the `unchecked_*_type`s of `event_store.rs` use in the glue's
//! own `pkg/eventstore_wasm.d.ts`, taken from the package's hand-written
//! types (`js/index.d.ts`, generic over an app's event map and checked by
//! `tests/types/`), so that the shapes are declared once.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
import type { StoredEvent as Event, Filter, PushEntry, SubscribeOptions, OpenOptions } from "./index";
"#;

#[wasm_bindgen]
extern "C" {
    /// The options argument of `EventStore.open`, typed for the `.d.ts`
    /// (checked by `interop::open_options`, not by its type).
    #[wasm_bindgen(typescript_type = "OpenOptions")]
    pub type OpenOptionsArg;
}
