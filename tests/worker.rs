//! The store inside a dedicated Web Worker, exactly as in a window.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use eventstore_wasm::EventStore;
use js_sys::{Array, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

fn js(json: &str) -> JsValue {
    JSON::parse(json).unwrap()
}

#[wasm_bindgen_test]
async fn push_filter_forget_and_subscribe_in_a_worker() {
    assert!(
        Reflect::get(&js_sys::global(), &"document".into())
            .unwrap()
            .is_undefined(),
        "running in a worker"
    );
    EventStore::delete_store("worker-store".into())
        .await
        .unwrap();
    let s = EventStore::open("worker-store".into(), None).await.unwrap();
    let seen = Array::new();
    let on_event = js_sys::Function::new_with_args("seen", "return (e) => seen.push(e)")
        .call1(&JsValue::NULL, &seen)
        .unwrap();
    s.subscribe(JsValue::UNDEFINED, on_event, JsValue::UNDEFINED)
        .unwrap();
    let pushed = s
        .push(js(r#"[{"aggregate":"w.a","expectedSequence":0,"commands":[
            {"action":"w.a.added","payload":{"email":"w@example.com"}},{"action":"w.a.renamed"}]}]"#))
        .await
        .unwrap();
    assert_eq!(Array::from(&pushed).length(), 2);
    let found = s
        .filter(
            js(r#"{"queries":[{"subjects":"w.*.added"}]}"#),
            JsValue::UNDEFINED,
        )
        .await
        .unwrap();
    assert_eq!(Array::from(&found).length(), 1);
    assert_eq!(
        s.forget(js(r#"{"queries":[{"aggregate":"w.a"}]}"#))
            .await
            .unwrap(),
        2.0
    );
    for _ in 0..100 {
        if seen.length() >= 2 {
            break;
        }
        let sleep = js_sys::Function::new_no_args("return new Promise((r) => setTimeout(r, 10))");
        let p: js_sys::Promise = sleep.call0(&JsValue::NULL).unwrap().unchecked_into();
        wasm_bindgen_futures::JsFuture::from(p).await.unwrap();
    }
    assert_eq!(seen.length(), 2);
    s.close();
}
