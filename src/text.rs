//! Bytes as text, and text many records share.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

/// `bytes` as text: borrowed when they are UTF-8 (`from_utf8` checks that on its fast path),
/// else with replacement characters, as `String::from_utf8_lossy` gives. That function alone
/// walks its input in UTF-8 chunks even when all of it is valid, and on the hot paths (logged
/// heads, every streamed event) it was over 1 % of a request's samples.
#[must_use]
pub fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Texts longer than this are not kept by [`intern`] (a header or path that long is rare, and
/// the table's bound is in entries).
const INTERN_MAX_LEN: usize = 256;

/// Entries [`intern`] keeps per thread before it starts over: at most 512 × 256 bytes.
const INTERN_MAX_ENTRIES: usize = 512;

thread_local! {
    static INTERNED: RefCell<HashSet<Arc<str>, foldhash::fast::RandomState>> = RefCell::default();
}

/// `text` as a shared string: the one this thread made before when it has one, else a new one
/// it keeps. A log record carries a dozen texts that repeat from request to request (gateway,
/// provider, path, method, model, content types, user agent); made afresh, each was an
/// allocation on the worker and a free on the log writer's thread. The table is per thread (no
/// lock) and bounded: past [`INTERN_MAX_ENTRIES`] it is emptied and fills again (strings still
/// in use live on in their records), so no input can make it grow without end.
#[must_use]
pub fn intern(text: &str) -> Arc<str> {
    if text.len() > INTERN_MAX_LEN {
        return Arc::from(text);
    }
    INTERNED.with_borrow_mut(|table| {
        if let Some(kept) = table.get(text) {
            return Arc::clone(kept);
        }
        if table.len() >= INTERN_MAX_ENTRIES {
            table.clear();
        }
        let made: Arc<str> = Arc::from(text);
        table.insert(Arc::clone(&made));
        made
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_text_is_shared_bounded_and_equal_to_its_input() {
        let a = intern("openai");
        assert!(Arc::ptr_eq(&a, &intern("openai")) && &*a == "openai");
        let long = "x".repeat(INTERN_MAX_LEN + 1);
        assert!(!Arc::ptr_eq(&intern(&long), &intern(&long)));
        for i in 0..INTERN_MAX_ENTRIES * 3 {
            assert_eq!(&*intern(&format!("agent/{i}")), format!("agent/{i}"));
        }
        assert!(INTERNED.with_borrow(HashSet::len) <= INTERN_MAX_ENTRIES);
        // Emptied on the way, the table made a new string; the old one is still whole.
        assert_eq!(&*a, "openai");
        assert!(Arc::ptr_eq(&intern("openai"), &intern("openai")));
    }

    #[test]
    fn valid_text_is_borrowed_and_the_rest_is_replaced_as_from_utf8_lossy_does() {
        assert!(matches!(lossy(b"data: {\"a\":1}"), Cow::Borrowed("data: {\"a\":1}")));
        assert!(matches!(lossy("caf\u{e9}".as_bytes()), Cow::Borrowed("caf\u{e9}")));
        for bad in [&b"caf\xe9"[..], b"\xff\xfe", b"ok\xe2\x82", b"\xf0\x9f\x98\x80\x80"] {
            assert_eq!(lossy(bad), String::from_utf8_lossy(bad));
        }
    }
}
