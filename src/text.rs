//! Bytes as text.

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed_and_the_rest_is_replaced_as_from_utf8_lossy_does() {
        assert!(matches!(lossy(b"data: {\"a\":1}"), Cow::Borrowed("data: {\"a\":1}")));
        assert!(matches!(lossy("caf\u{e9}".as_bytes()), Cow::Borrowed("caf\u{e9}")));
        for bad in [&b"caf\xe9"[..], b"\xff\xfe", b"ok\xe2\x82", b"\xf0\x9f\x98\x80\x80"] {
            assert_eq!(lossy(bad), String::from_utf8_lossy(bad));
        }
    }
}
