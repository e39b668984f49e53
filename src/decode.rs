//! Decodes a batch's events (the JSON array of [`StoredEvent`]) by hand.
//!
//! serde's derived deserializer of the five fields pulled serde_json's
//! typed parsing into the wasm module, and with it float parsing and
//! formatting for its error messages: about 7 KB gzipped. The array is
//! read here byte by byte; only a payload (or an unknown field's value) is
//! handed to serde_json, as a [`RawValue`] that it borrows from the text.
//! What serde accepted is accepted (any field order, whitespace, unknown
//! fields, a `null` payload read as none); what it refused is refused, with
//! a message of this module's own.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::batch::StoredEvent;

/// The events of `text`, or why it is not an array of stored events.
pub fn events(text: &str) -> Result<Vec<StoredEvent<'_>>, String> {
    let mut p = Parser { text, at: 0 };
    let mut events = Vec::new();
    p.expect(b'[')?;
    if !p.eat(b']') {
        loop {
            events.push(p.event()?);
            if p.eat(b']') {
                break;
            }
            p.expect(b',')?;
        }
    }
    p.space();
    if p.at != text.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(events)
}

struct Parser<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Parser<'t> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn space(&mut self) {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    /// Skips white space; then whether the next byte is `b` (consumed if so).
    fn eat(&mut self, b: u8) -> bool {
        self.space();
        let found = self.text.as_bytes().get(self.at) == Some(&b);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", b as char)))
        }
    }

    fn event(&mut self) -> Result<StoredEvent<'t>, String> {
        let (mut id, mut action, mut revision, mut payload, mut forgotten) =
            (None, None, None, None, None);
        self.expect(b'{')?;
        if !self.eat(b'}') {
            loop {
                self.space();
                let key = self.string()?;
                self.expect(b':')?;
                self.space();
                match key.as_ref() {
                    "id" if id.is_none() => id = Some(self.string()?),
                    "action" if action.is_none() => action = Some(self.string()?),
                    "revision" if revision.is_none() => revision = Some(self.revision()?),
                    "payload" if payload.is_none() => {
                        let raw = self.raw()?;
                        payload = Some((raw.get() != "null").then_some(raw));
                    }
                    "forgotten" if forgotten.is_none() => forgotten = Some(self.boolean()?),
                    "id" | "action" | "revision" | "payload" | "forgotten" => {
                        return Err(self.error(&format!("duplicate field `{key}`")))
                    }
                    _ => {
                        self.raw()?;
                    }
                }
                if self.eat(b'}') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        let missing = |field: &str| self.error(&format!("missing field `{field}`"));
        Ok(StoredEvent {
            id: id.ok_or_else(|| missing("id"))?,
            action: action.ok_or_else(|| missing("action"))?,
            revision: revision.ok_or_else(|| missing("revision"))?,
            payload: payload.flatten(),
            forgotten: forgotten.unwrap_or(false),
        })
    }

    /// A string, borrowed from the text unless it has escapes.
    fn string(&mut self) -> Result<Cow<'t, str>, String> {
        let bytes = self.text.as_bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        self.at += 1;
        let start = self.at;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            let Some(&b) = bytes.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            match b {
                b'"' => {
                    let end = self.at;
                    self.at += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(&self.text[start..end]),
                        Some(mut s) => {
                            s.push_str(&self.text[run..end]);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[run..self.at]);
                    self.at += 1;
                    let c = match bytes.get(self.at) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let c = self.unicode_escape()?;
                            s.push(c);
                            run = self.at;
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    s.push(c);
                    self.at += 1;
                    run = self.at;
                }
                0..=0x1f => return Err(self.error("control character in a string")),
                _ => self.at += 1,
            }
        }
    }

    /// The character of `XXXX` (after `\u`), with a following `\uXXXX` for
    /// a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.text.as_bytes().get(self.at..self.at + 2) != Some(b"\\u") {
                    return Err(self.error("lone leading surrogate"));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("invalid surrogate pair"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid escape"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))
    }

    /// A revision: an integer in `0..=65535`.
    fn revision(&mut self) -> Result<u16, String> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let leading_zero = digits.len() > 1 && digits.starts_with('0');
        let fraction = matches!(bytes.get(self.at), Some(b'.' | b'e' | b'E'));
        if digits.is_empty() || leading_zero || fraction {
            return Err(self.error("a revision must be an integer in 0..=65535"));
        }
        digits
            .parse()
            .map_err(|_| self.error("a revision must be an integer in 0..=65535"))
    }

    fn boolean(&mut self) -> Result<bool, String> {
        for (word, value) in [("true", true), ("false", false)] {
            if self.text[self.at..].starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        Err(self.error("expected a boolean"))
    }

    /// Any JSON value, as serde_json reads it, borrowed from the text.
    fn raw(&mut self) -> Result<&'t RawValue, String> {
        let rest: &'t str = &self.text[self.at..];
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&'t RawValue>();
        match values.next() {
            Some(Ok(raw)) => {
                self.at += values.byte_offset();
                Ok(raw)
            }
            Some(Err(e)) => Err(self.error(&format!("invalid value ({e})"))),
            None => Err(self.error("expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored<'a>(id: &'a str, payload: Option<&'a RawValue>, forgotten: bool) -> StoredEvent<'a> {
        StoredEvent {
            id: Cow::Borrowed(id),
            action: Cow::Borrowed("user.A.added"),
            revision: 3,
            payload,
            forgotten,
        }
    }

    #[test]
    fn reads_what_serde_writes() {
        let p1 = RawValue::from_string(r#"{"a":[1,2.5e3,"x\"]}"],"b":null}"#.into()).unwrap();
        let p2 = RawValue::from_string("\"é\\u00e9\\ud83d\\ude00\"".into()).unwrap();
        let p3 = RawValue::from_string("-0.5".into()).unwrap();
        let ids = ["a\"b\\c/\u{1}\n\té😀", "plain", "x"];
        let written = vec![
            stored(ids[0], Some(&p1), false),
            stored(ids[1], Some(&p2), true),
            stored(ids[2], Some(&p3), false),
            stored("none", None, true),
        ];
        let text = serde_json::to_string(&written).unwrap();
        let read = events(&text).unwrap();
        assert_eq!(read.len(), written.len());
        for (r, w) in read.iter().zip(&written) {
            assert_eq!(r.id, w.id);
            assert_eq!(r.action, w.action);
            assert_eq!(r.revision, w.revision);
            assert_eq!(r.payload.map(RawValue::get), w.payload.map(RawValue::get));
            assert_eq!(r.forgotten, w.forgotten);
        }
        assert!(matches!(read[1].id, Cow::Borrowed(_)));
        assert!(matches!(read[0].id, Cow::Owned(_)));
    }

    #[test]
    fn takes_what_serde_took() {
        let text = " [ {\"payload\" : null, \"revision\":0 ,\"extra\":{\"k\":[1]},\n\"action\":\"b\",\"id\":\"\\u0041\\/\"} ] ";
        let read = events(text).unwrap();
        assert_eq!(read[0].id, "A/");
        assert_eq!(read[0].action, "b");
        assert_eq!(read[0].revision, 0);
        assert!(read[0].payload.is_none() && !read[0].forgotten);
        assert!(events("[]").unwrap().is_empty());
        assert!(events(" [ ] ").unwrap().is_empty());
        let max = r#"[{"id":"a","action":"b","revision":65535}]"#;
        assert_eq!(events(max).unwrap()[0].revision, 65535);
    }

    #[test]
    fn refuses_what_serde_refused() {
        for bad in [
            "",
            "{}",
            "[",
            "[{}]",
            r#"[{"id":"a","action":"b"}]"#,
            r#"[{"id":"a","revision":1}]"#,
            r#"[{"id":"a","action":"b","revision":65536}]"#,
            r#"[{"id":"a","action":"b","revision":-1}]"#,
            r#"[{"id":"a","action":"b","revision":1.5}]"#,
            r#"[{"id":"a","action":"b","revision":1e2}]"#,
            r#"[{"id":"a","action":"b","revision":01}]"#,
            r#"[{"id":"a","action":"b","revision":"1"}]"#,
            r#"[{"id":"a","id":"c","action":"b","revision":1}]"#,
            r#"[{"id":"a","action":"b","revision":1,"forgotten":true,"forgotten":true}]"#,
            r#"[{"id":1,"action":"b","revision":1}]"#,
            r#"[{"id":"a","action":"b","revision":1,"forgotten":1}]"#,
            r#"[{"id":"a","action":"b","revision":1,"payload":}]"#,
            r#"[{"id":"a","action":"b","revision":1,"payload":{]}]"#,
            r#"[{"id":"a\x","action":"b","revision":1}]"#,
            r#"[{"id":"\ud800","action":"b","revision":1}]"#,
            r#"[{"id":"\udc00","action":"b","revision":1}]"#,
            "[{\"id\":\"a\u{1}\",\"action\":\"b\",\"revision\":1}]",
            r#"[{"id":"a","action":"b","revision":1}"#,
            r#"[{"id":"a","action":"b","revision":1},]"#,
            r#"[{"id":"a","action":"b","revision":1}] x"#,
            r#"[{"id":"a","action":"b","revision":1} {"id":"a","action":"b","revision":1}]"#,
        ] {
            assert!(events(bad).is_err(), "accepted {bad:?}");
        }
    }
}
