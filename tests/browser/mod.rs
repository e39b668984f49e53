//! Helpers shared by the browser test files (wasm-pack test): JSON values,
//! property reads and the store's error codes.
#![allow(dead_code, clippy::unwrap_used)]

use js_sys::{Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};

/// The JSON text parsed into a JavaScript value.
pub fn js(json: &str) -> JsValue {
    JSON::parse(json).unwrap()
}

/// `v[key]`.
pub fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

/// The `code` of an error the store threw (which must be an `Error`).
pub fn code(err: &JsValue) -> String {
    assert!(err.is_instance_of::<js_sys::Error>(), "an Error instance");
    get(err, "code").as_string().unwrap_or_default()
}
