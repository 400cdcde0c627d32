//! What more than one bench uses.

/// Words of two or three syllables drawn by `x` (xorshift): text as varied as a prompt's,
/// which lz4 finds little to shorten inside one log.
pub fn words(x: &mut u64, len: usize) -> String {
    const ONSETS: &[&str] =
        &["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "sh"];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ea", "ou"];
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        for _ in 0..2 + next() % 2 {
            let r = next();
            out.push_str(ONSETS[(r % ONSETS.len() as u64) as usize]);
            out.push_str(VOWELS[((r >> 8) % VOWELS.len() as u64) as usize]);
        }
        out.push(' ');
    }
    out
}
