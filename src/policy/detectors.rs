//! DLP detectors: the built-in profiles (a pattern plus a validator each, so a number that merely
//! looks like a card is not one) and the operator's custom profiles (a pattern plus optional
//! keywords that must stand near it). One `RegexSet` pass finds which detectors can match; only
//! those run again for positions and validation.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// A built-in profile: its stable id, what REDACT writes, and a one-line description.
pub struct BuiltIn {
    /// Stable id used in policies.
    pub id: &'static str,
    /// Name shown in the admin UI.
    pub name: &'static str,
    /// What it finds.
    pub description: &'static str,
}

/// The built-in profiles, in the order the admin UI lists them.
pub const BUILT_INS: &[BuiltIn] = &[
    BuiltIn {
        id: "credit-card",
        name: "Payment cards",
        description: "Card numbers of 13–19 digits (Luhn-checked, known issuer prefixes), spaced or dashed",
    },
    BuiltIn {
        id: "us-ssn",
        name: "US Social Security numbers",
        description: "AAA-GG-SSSS with the SSA's rules (no 000, 666 or 9xx area, no 00 group, no 0000 serial)",
    },
    BuiltIn {
        id: "iban",
        name: "IBANs",
        description: "International bank account numbers, country length and mod-97 checksum verified",
    },
    BuiltIn { id: "email", name: "Email addresses", description: "Addresses with a dotted domain and a letter TLD" },
    BuiltIn {
        id: "phone",
        name: "Phone numbers",
        description: "International (+country) numbers of 8–15 digits and North American numbers",
    },
    BuiltIn {
        id: "credentials",
        name: "Credentials",
        description: "AWS access keys, OpenAI/Anthropic/GitHub tokens, PEM private keys, JWTs",
    },
];

/// Whether `id` names a built-in profile.
#[must_use]
pub fn is_built_in(id: &str) -> bool {
    BUILT_INS.iter().any(|b| b.id == id)
}

/// Checks a candidate beyond its pattern.
type Validator = fn(&str) -> bool;

/// One thing a profile finds.
pub struct Entry {
    /// The profile it belongs to (`credit-card`, or a custom profile's id).
    pub profile: String,
    /// Which of the profile's patterns (`visa-mastercard-amex`, `aws-access-key`, ...).
    pub entry: String,
    /// What REDACT writes: `[REDACTED:{label}]`.
    pub label: String,
    regex: Regex,
    validator: Option<Validator>,
    /// Keywords of which one must stand within `proximity` characters (custom profiles).
    keywords: Vec<String>,
    proximity: usize,
    /// Characters a match can be made of, and its longest length: what a stream holds back.
    hold: Hold,
}

/// What part of a text's end could still grow into a match (for streams).
#[derive(Clone, Copy)]
enum Hold {
    /// The trailing run of characters of this class, up to `max` characters.
    Run { class: fn(char) -> bool, max: usize },
    /// From an unterminated `-----BEGIN` (or a prefix of it at the very end), up to `max` bytes.
    Pem { max: usize },
}

fn digitish(c: char) -> bool {
    c.is_ascii_digit() || c == ' ' || c == '-'
}
fn phoneish(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '+')
}
fn upper_digit_space(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' '
}
fn emailish(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '@')
}
fn tokenish(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}
fn not_space(c: char) -> bool {
    !c.is_whitespace()
}

/// A match in a scanned text (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Index into the scanner's entries.
    pub entry: usize,
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
}

/// A custom profile as stored.
pub struct CustomPattern<'a> {
    /// Profile id.
    pub id: &'a str,
    /// Regex (the `regex` crate's syntax).
    pub pattern: &'a str,
    /// Keywords (case-insensitive); empty: none needed.
    pub keywords: &'a [String],
    /// Characters around the match the keyword may stand within.
    pub proximity: usize,
}

/// Largest compiled program a custom pattern may make (a pathological pattern is refused).
pub const CUSTOM_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a custom pattern as a scanner would, to check it on save.
pub fn compile_custom(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).size_limit(CUSTOM_SIZE_LIMIT).build().map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

/// The detectors of some profiles, compiled once per configuration change.
pub struct Scanner {
    set: RegexSet,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").field("entries", &self.entries.len()).finish_non_exhaustive()
    }
}

struct Spec {
    entry: &'static str,
    label: &'static str,
    pattern: &'static str,
    validator: Option<Validator>,
    hold: Hold,
}

fn built_in_specs(profile: &str) -> Vec<Spec> {
    let run = |class: fn(char) -> bool, max: usize| Hold::Run { class, max };
    match profile {
        "credit-card" => vec![Spec {
            entry: "card-number",
            label: "credit_card",
            pattern: r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
            validator: Some(valid_card),
            hold: run(digitish, 24),
        }],
        "us-ssn" => vec![Spec {
            entry: "ssn",
            label: "us_ssn",
            pattern: r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)",
            validator: Some(valid_ssn),
            hold: run(digitish, 12),
        }],
        "iban" => vec![Spec {
            entry: "iban",
            label: "iban",
            pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)",
            validator: Some(valid_iban),
            hold: run(upper_digit_space, 43),
        }],
        "email" => vec![Spec {
            entry: "email",
            label: "email",
            pattern: r"(?-u:\b)[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)",
            validator: Some(valid_email),
            hold: run(emailish, 254),
        }],
        "phone" => vec![
            Spec {
                entry: "international",
                label: "phone",
                pattern: r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}(?-u:\b)",
                validator: Some(valid_international_phone),
                hold: run(phoneish, 24),
            },
            Spec {
                entry: "north-american",
                label: "phone",
                pattern: r"(?:(?-u:\b)1[ .-])?(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}(?-u:\b)",
                validator: None,
                hold: run(phoneish, 18),
            },
        ],
        "credentials" => vec![
            Spec {
                entry: "aws-access-key",
                label: "credential",
                pattern: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?-u:\b)",
                validator: None,
                hold: run(tokenish, 20),
            },
            Spec {
                entry: "anthropic-key",
                label: "credential",
                pattern: r"(?-u:\b)sk-ant-(?:api|admin|oat)[0-9]{2}-[A-Za-z0-9_-]{32,128}",
                validator: None,
                hold: run(tokenish, 160),
            },
            Spec {
                entry: "openai-key",
                label: "credential",
                pattern: r"(?-u:\b)sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{32,200}",
                validator: Some(not_anthropic),
                hold: run(tokenish, 220),
            },
            Spec {
                entry: "github-token",
                label: "credential",
                pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)",
                validator: None,
                hold: run(tokenish, 93),
            },
            Spec {
                entry: "pem-private-key",
                label: "private_key",
                pattern: r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----(?s:.){16,}?-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
                validator: None,
                hold: Hold::Pem { max: 16_384 },
            },
            Spec {
                entry: "jwt",
                label: "jwt",
                pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
                validator: Some(valid_jwt),
                hold: run(tokenish, 4096),
            },
        ],
        _ => Vec::new(),
    }
}

impl Scanner {
    /// The detectors of `profiles` (built-in ids, or custom profiles found in `custom`). Unknown
    /// ids are skipped: they are refused when a policy is saved.
    pub fn new(profiles: &[String], custom: &[CustomPattern<'_>]) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        for id in profiles {
            let specs = built_in_specs(id);
            if !specs.is_empty() {
                for s in specs {
                    let regex = Regex::new(s.pattern).map_err(|e| e.to_string())?;
                    patterns.push(s.pattern.to_string());
                    entries.push(Entry {
                        profile: id.clone(),
                        entry: s.entry.to_string(),
                        label: s.label.to_string(),
                        regex,
                        validator: s.validator,
                        keywords: Vec::new(),
                        proximity: 0,
                        hold: s.hold,
                    });
                }
            } else if let Some(c) = custom.iter().find(|c| c.id == id) {
                let regex = compile_custom(c.pattern)?;
                patterns.push(c.pattern.to_string());
                entries.push(Entry {
                    profile: id.clone(),
                    entry: "pattern".into(),
                    label: "custom".into(),
                    regex,
                    validator: None,
                    keywords: c.keywords.iter().map(|k| k.to_lowercase()).collect(),
                    proximity: c.proximity,
                    hold: Hold::Run { class: not_space, max: 64 },
                });
            }
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(CUSTOM_SIZE_LIMIT * 16)
            .build()
            .map_err(|e| first_line(&e.to_string()))?;
        Ok(Self { set, entries })
    }

    /// The entries, indexed by [`Found::entry`].
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether there is anything to look for.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every validated match in `text`, by start (overlaps kept: several entries may see the
    /// same characters).
    #[must_use]
    pub fn scan(&self, text: &str) -> Vec<Found> {
        let mut out = Vec::new();
        if self.entries.is_empty() {
            return out;
        }
        for i in &self.set.matches(text) {
            let e = &self.entries[i];
            for m in e.regex.find_iter(text) {
                let ok = e.validator.is_none_or(|v| v(m.as_str())) && near_keyword(text, m.start(), m.end(), e);
                if ok {
                    out.push(Found { entry: i, start: m.start(), end: m.end() });
                }
            }
        }
        out.sort_by_key(|f| (f.start, f.end));
        out
    }

    /// How many bytes at the end of `text` could still be the start of a match that the next
    /// piece of a stream completes (always on a character boundary).
    #[must_use]
    pub fn holdback(&self, text: &str) -> usize {
        let mut hold = 0;
        for e in &self.entries {
            let n = match e.hold {
                Hold::Run { class, max } => {
                    let mut n = 0;
                    for (count, c) in text.chars().rev().enumerate() {
                        if !class(c) || count >= max {
                            break;
                        }
                        n += c.len_utf8();
                    }
                    // A match starts with a letter, a digit, `+` or `(`: separators before
                    // that need not wait.
                    let run = &text[text.len() - n..];
                    let start = run.find(|c: char| c.is_ascii_alphanumeric() || c == '+' || c == '(');
                    start.map_or(0, |s| n - s)
                }
                Hold::Pem { max } => pem_hold(text, max),
            };
            hold = hold.max(n);
        }
        hold
    }
}

fn near_keyword(text: &str, start: usize, end: usize, e: &Entry) -> bool {
    if e.keywords.is_empty() {
        return true;
    }
    let mut from = start.saturating_sub(e.proximity);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (end + e.proximity).min(text.len());
    while !text.is_char_boundary(to) {
        to += 1;
    }
    let window = text[from..to].to_lowercase();
    e.keywords.iter().any(|k| window.contains(k.as_str()))
}

const PEM_START: &str = "-----BEGIN";

fn pem_hold(text: &str, max: usize) -> usize {
    if let Some(at) = text.rfind(PEM_START) {
        let open = &text[at..];
        let closed = open.find("-----END").is_some_and(|i| open[i..].contains("KEY-----"));
        if !closed {
            let n = open.len();
            return if n <= max { n } else { 0 };
        }
    }
    // A prefix of the marker at the very end.
    (1..PEM_START.len()).rev().find(|&k| text.ends_with(&PEM_START[..k])).unwrap_or(0)
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
}

/// Luhn checksum.
#[must_use]
pub fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn valid_card(s: &str) -> bool {
    let d = digits(s);
    // One kind of separator, used consistently (groups), or none.
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    if seps.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    if !(13..=19).contains(&d.len()) || !luhn(&d) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |a, &x| a * 10 + u32::from(x));
    let len = d.len();
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),                     // Visa
        5 => (51..=55).contains(&prefix(2)) && len == 16,     // Mastercard
        2 => (2221..=2720).contains(&prefix(4)) && len == 16, // Mastercard 2-series
        3 => {
            matches!(prefix(2), 34 | 37) && len == 15                                   // Amex
            || (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len)            // JCB
            || matches!(prefix(2), 36 | 38 | 39) && (14..=19).contains(&len)             // Diners
            || (300..=305).contains(&prefix(3)) && (14..=19).contains(&len)
        }
        6 => {
            (prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || (622_126..=622_925).contains(&prefix(6)))
                && (16..=19).contains(&len)
        } // Discover, UnionPay co-branded
        _ => false,
    }
}

fn valid_ssn(s: &str) -> bool {
    let sep: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    if sep.len() != 2 || sep[0] != sep[1] {
        return false;
    }
    let d = digits(s);
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && s != "078-05-1120" && s != "219-09-9999"
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

fn valid_iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| *c != ' ').collect();
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(cc, _)| compact.starts_with(cc)) else { return false };
    if compact.len() != len {
        return false;
    }
    let rotated = compact[4..].chars().chain(compact[..4].chars());
    let mut rem = 0u32;
    for c in rotated {
        let v = match c {
            '0'..='9' => u32::from(c) - u32::from('0'),
            'A'..='Z' => u32::from(c) - u32::from('A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn valid_email(s: &str) -> bool {
    let Some((local, _)) = s.split_once('@') else { return false };
    !local.starts_with('.') && !local.ends_with('.') && !local.contains("..")
}

fn valid_international_phone(s: &str) -> bool {
    let n = s.bytes().filter(u8::is_ascii_digit).count();
    let parens_balanced = s.matches('(').count() == s.matches(')').count();
    (8..=15).contains(&n) && parens_balanced
}

fn not_anthropic(s: &str) -> bool {
    !s.starts_with("sk-ant-")
}

fn valid_jwt(s: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = s.split('.').next() else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.get("alg").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(ids: &[&str]) -> Scanner {
        Scanner::new(&ids.iter().map(|s| (*s).to_string()).collect::<Vec<_>>(), &[]).unwrap()
    }

    #[test]
    fn luhn_and_iban_checksums() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(valid_iban("DE89370400440532013000"));
        assert!(!valid_iban("DE89370400440532013001"));
    }

    #[test]
    fn holdback_covers_a_partial_card_and_an_open_pem_block() {
        let s = scanner(&["credit-card", "credentials"]);
        assert_eq!(s.holdback("my card is 4111 1111"), "4111 1111".len());
        assert_eq!(s.holdback("Hello! "), 0);
        assert_eq!(s.holdback("key: -----BEG"), "-----BEG".len());
        let open = "-----BEGIN PRIVATE KEY-----\nMIIEv";
        assert_eq!(s.holdback(&format!("x {open}")), open.len());
    }

    #[test]
    fn custom_profiles_need_their_keyword_nearby() {
        let keywords = vec!["employee".to_string()];
        let custom = [CustomPattern { id: "emp", pattern: r"\bE-[0-9]{6}\b", keywords: &keywords, proximity: 20 }];
        let s = Scanner::new(&["emp".to_string()], &custom).unwrap();
        assert_eq!(s.scan("Employee id E-123456").len(), 1);
        assert!(s.scan("order E-123456 shipped to the warehouse").is_empty());
    }
}

/// Positives and near misses for each built-in detector: recall and precision measured on them
/// (printed with `--nocapture`), and every case decided as expected.
#[cfg(test)]
mod corpus {
    use super::*;

    /// (profile, text, should match)
    const CASES: &[(&str, &str, bool)] = &[
        ("credit-card", "card 4111 1111 1111 1111 exp 12/29", true),
        ("credit-card", "visa 4012888888881881", true),
        ("credit-card", "mc 5555-5555-5555-4444", true),
        ("credit-card", "mc 2223003122003222", true),
        ("credit-card", "amex 3782 822463 10005", true),
        ("credit-card", "discover 6011111111111117", true),
        ("credit-card", "jcb 3530111333300000", true),
        ("credit-card", "card 4111 1111 1111 1112", false),
        ("credit-card", "order 1234567890123456", false),
        ("credit-card", "ts 1700000000000", false),
        ("credit-card", "mixed 4111-1111 1111-1111", false),
        ("credit-card", "all zeros 0000 0000 0000 0000", false),
        ("credit-card", "phone 555 123 4567", false),
        ("us-ssn", "SSN 123-45-6789", true),
        ("us-ssn", "ssn: 219 09 9998", true),
        ("us-ssn", "ssn 078-05-1120", false),
        ("us-ssn", "id 000-12-3456", false),
        ("us-ssn", "id 666-12-3456", false),
        ("us-ssn", "id 900-12-3456", false),
        ("us-ssn", "id 123-00-4567", false),
        ("us-ssn", "id 123-45-0000", false),
        ("us-ssn", "date 2024-01-15", false),
        ("us-ssn", "mixed 123-45 6789", false),
        ("iban", "IBAN GB82 WEST 1234 5698 7654 32", true),
        ("iban", "DE89370400440532013000", true),
        ("iban", "FR1420041010050500013M02606", true),
        ("iban", "NL91ABNA0417164300", true),
        ("iban", "DE89370400440532013001", false),
        ("iban", "GB82 WEST 1234 5698 7654", false),
        ("iban", "XX12 3456 7890 1234 56", false),
        ("email", "write to jane.doe+tag@example.co.uk", true),
        ("email", "ops@torii.internal.example", true),
        ("email", "a@b.io", true),
        ("email", "not an email: jane@localhost", false),
        ("email", "@handle on the forum", false),
        ("email", "double dots jane..doe@example.com", false),
        ("phone", "call +44 20 7946 0958", true),
        ("phone", "call +1-415-555-2671", true),
        ("phone", "call (415) 555-2671", true),
        ("phone", "call 415.555.2671", true),
        ("phone", "version 1.2.3", false),
        ("phone", "count +42", false),
        ("phone", "date 2024-01-15", false),
        ("phone", "zip 94105-1234", false),
        ("credentials", "key AKIAIOSFODNN7EXAMPLE", true),
        ("credentials", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", true),
        ("credentials", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH", true),
        ("credentials", "ghp_0123456789abcdefghijABCDEFGHIJ012345", true),
        ("credentials", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9kQ\n-----END RSA PRIVATE KEY-----", true),
        (
            "credentials",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            true,
        ),
        ("credentials", "AKIA is the prefix of AWS keys", false),
        ("credentials", "sk-short", false),
        ("credentials", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----", false),
        ("credentials", "eyJub3QiOiJqd3QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV", false),
        ("credentials", "ghp_tooshort", false),
    ];

    #[test]
    fn every_case_is_decided_as_expected_and_the_rates_are_reported() {
        let mut wrong = Vec::new();
        for id in BUILT_INS.iter().map(|b| b.id) {
            let s = Scanner::new(&[id.to_string()], &[]).unwrap();
            let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
            for (_, text, expect) in CASES.iter().filter(|(p, _, _)| *p == id) {
                let hit = !s.scan(text).is_empty();
                match (hit, *expect) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
                if hit != *expect {
                    wrong.push(format!("{id}: {text:?} matched={hit}"));
                }
            }
            let precision = f64::from(tp) / f64::from((tp + fp).max(1));
            let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
            println!("{id:12} precision {precision:.2} recall {recall:.2} ({tp} found, {fp} false, {fn_} missed)");
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
