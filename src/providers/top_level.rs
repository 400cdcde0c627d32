//! A JSON object's top-level members, read without parsing what the members hold: a request's
//! `messages` (most of its bytes) are only delimited, by their brackets and strings, on the
//! request's critical path.
//!
//! The keys are read as JSON reads them (escapes decoded) and the values are handed over as the
//! bytes they span. What a value holds is not checked: a body that is not JSON inside a value
//! still has its top level read, and the provider refuses the body.

use std::borrow::Cow;

/// Calls `member` with each top-level key (its text's bytes, escapes decoded) and the bytes of
/// its value, in the order they stand. `None` when `body` is not an object (after optional white
/// space) delimited as JSON delimits one, or when a key with escapes is not a JSON string.
pub fn members<'a>(body: &'a [u8], mut member: impl FnMut(&[u8], &'a [u8])) -> Option<()> {
    let mut at = after_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = after_space(body, at + 1);
    if body.get(at) == Some(&b'}') {
        return (after_space(body, at + 1) == body.len()).then_some(());
    }
    loop {
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let (key_end, escaped) = string_end(body, at)?;
        // Most keys have no escapes: their bytes are their text (compared, never printed).
        let key = if escaped {
            Cow::Owned(string(&body[at..key_end])?.into_owned().into_bytes())
        } else {
            Cow::Borrowed(&body[at + 1..key_end - 1])
        };
        at = after_space(body, key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        at = after_space(body, at + 1);
        let end = value_end(body, at)?;
        member(&key, &body[at..end]);
        at = after_space(body, end);
        match body.get(at) {
            Some(b',') => at = after_space(body, at + 1),
            Some(b'}') => return (after_space(body, at + 1) == body.len()).then_some(()),
            _ => return None,
        }
    }
}

/// A JSON string's text (`quoted` with its quotes): borrowed when it has no escapes.
#[must_use]
pub fn string(quoted: &[u8]) -> Option<Cow<'_, str>> {
    let inner = quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') && !inner.iter().any(|b| *b < 0x20) {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice(quoted).ok()
}

fn after_space(body: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = body.get(at) {
        at += 1;
    }
    at
}

/// Where the string that opens at `at` (a quote) ends, just after its closing quote, and
/// whether it has escapes.
fn string_end(body: &[u8], at: usize) -> Option<(usize, bool)> {
    let mut from = at + 1;
    let mut escaped = false;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[found] == b'"' {
            return Some((found + 1, escaped));
        }
        // An escape: the next byte is escaped, whatever it is.
        escaped = true;
        from = found + 2;
    }
}

/// Where the value that starts at `at` ends: after its closing bracket or quote, or at the
/// first delimiter after a number or literal.
fn value_end(body: &[u8], at: usize) -> Option<usize> {
    match *body.get(at)? {
        b'"' => string_end(body, at).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match *body.get(i)? {
                    b'"' => {
                        i = string_end(body, i)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let rest = &body[at..];
            let len = rest.iter().position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            Some(at + len.unwrap_or(rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &[u8]) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        members(body, |k, v| {
            out.push((String::from_utf8(k.to_vec()).unwrap(), String::from_utf8_lossy(v).into_owned()));
        })?;
        Some(out)
    }

    /// Every JSON object's members come out as a JSON parser reads them: the same keys in the
    /// same order, each value's bytes parsing to the parser's value.
    #[test]
    fn members_agree_with_a_json_parser() {
        let bodies: &[&[u8]] = &[
            b"{}",
            b" \n{ } \t",
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\" {[\\"}],"stream":true}"#,
            br#"{"a":1,"b":-2.5e3,"c":null,"d":false,"e":[],"f":{},"g":[1,[2,[3]]],"h":"\u007b"}"#,
            br#"{ "model" : "m" , "x" : { "y" : [ "]" , "}" , "\\" ] } , "stream" : true }"#,
            br#"{"mod\u0065l":"escaped key","k\"q":"quote in key"}"#,
            "{\"model\":\"ünïcödé\",\"n\":0}".as_bytes(),
        ];
        for body in bodies {
            let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).unwrap();
            let read = all(body).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(body)));
            let keys: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
            // The map keeps the keys sorted; the members come in their order.
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, parsed.keys().map(String::as_str).collect::<Vec<_>>());
            for (k, v) in &read {
                assert_eq!(&serde_json::from_str::<serde_json::Value>(v).unwrap(), &parsed[k], "{k}");
            }
        }
    }

    #[test]
    fn what_is_not_an_object_has_no_members() {
        for body in [
            &b""[..],
            b"[1]",
            b"\"s\"",
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\":1 \"b\":2}",
            b"{\"a\":\"unclosed}",
            b"{\"a\":[1,2}",
            b"{\"a\":1} x",
            b"{a:1}",
            b"{\"a\":1}}",
        ] {
            assert_eq!(all(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    /// Any bytes at all: an answer or `None`, never a panic (cut and mutated request bodies).
    #[test]
    fn any_bytes_are_read_without_panicking() {
        let body =
            br#"{"model":"m\u00e9","stream":true,"messages":[{"role":"user","content":"a \"b\" [{"}],"n":-1.5e3}"#;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}[]\":,\\ x0";
        let mut read = 0;
        for cut in 0..=body.len() {
            read += usize::from(members(&body[..cut], |_, _| {}).is_some());
            for _ in 0..20 {
                let mut mutated = body[..cut].to_vec();
                if let Some(len) = std::num::NonZeroUsize::new(mutated.len()) {
                    let at = usize::try_from(next()).unwrap() % len;
                    mutated[at] = alphabet[usize::try_from(next()).unwrap() % alphabet.len()];
                }
                let _ = members(&mutated, |k, v| {
                    let _ = (string(v), k.len());
                });
            }
        }
        assert_eq!(read, 1, "only the whole body is an object");
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        assert!(matches!(string(br#""gpt-4o""#), Some(Cow::Borrowed("gpt-4o"))));
        assert_eq!(string(br#""a\u002db""#).as_deref(), Some("a-b"));
        assert_eq!(string(b"\"tab\there\""), None, "a control character is not JSON");
        assert_eq!(string(b"5"), None);
        assert_eq!(string(b"\"\xff\""), None);
    }
}
