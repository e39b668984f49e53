//! Import of NDJSON exports (`portability`), natively.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use common::{entry, Store};
use eventstore_wasm::filter::Filter;
use eventstore_wasm::portability::import_lines;
use futures::executor::block_on;

fn export(store: &Store) -> String {
    store
        .filter(&Filter::default())
        .unwrap()
        .iter()
        .map(|e| e.to_string() + "\n")
        .collect()
}

#[test]
fn an_export_imports_as_it_was() {
    let mut a = Store::new();
    a.push(&[
        entry(
            "user.A",
            None,
            &[
                ("user.A.added", r#"{"name":"Ada","n":[1,2.50]}"#),
                ("user.A.renamed", "\"x\""),
            ],
        ),
        entry("team.T", None, &[("user.A.joined", "null")]),
    ])
    .unwrap();
    a.now += 5;
    a.push(&[entry("user.A", None, &[("user.A.removed", "{}")])])
        .unwrap();
    a.forget(&common::aggregate("team.T")).unwrap();
    let text = export(&a);
    let b = Store::new();
    // In two calls, as the browser writes a few thousand lines at a time.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        block_on(import_lines(
            &b.storage,
            &b.cache,
            &lines[..2].join("\n"),
            1
        ))
        .unwrap(),
        2
    );
    assert_eq!(
        block_on(import_lines(
            &b.storage,
            &b.cache,
            &lines[2..].join("\n"),
            3
        ))
        .unwrap(),
        2
    );
    assert_eq!(
        export(&b),
        text,
        "ids, sequences, actions, revisions, createdAt, payloads, forgotten flags, positions"
    );
}

#[test]
fn a_bad_line_is_named_and_nothing_of_its_call_is_written() {
    let mut a = Store::new();
    a.push(&[entry(
        "user.A",
        None,
        &[("user.A.added", "{}"), ("user.A.renamed", "{}")],
    )])
    .unwrap();
    let text = export(&a);
    let b = Store::new();
    let truncated = &text[..text.len() - 20];
    let e = block_on(import_lines(&b.storage, &b.cache, truncated, 7)).unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");
    assert!(e.to_string().contains("line 8"), "{e}");
    assert_eq!(b.count(&Filter::default()).unwrap(), 0);
    // A gap in an aggregate's sequences is refused too.
    let second = text.lines().nth(1).unwrap();
    let e = block_on(import_lines(&b.storage, &b.cache, second, 1)).unwrap_err();
    assert!(
        e.to_string().contains("line 1") && e.to_string().contains("#2 follows #0"),
        "{e}"
    );
    // A forgotten event with a payload is refused.
    let forged = text
        .lines()
        .next()
        .unwrap()
        .replace(r#""forgotten":false"#, r#""forgotten":true"#);
    let e = block_on(import_lines(&b.storage, &b.cache, &forged, 1)).unwrap_err();
    assert!(e.to_string().contains("forgotten"), "{e}");
}
