//! URL templates with named parts, and the strict charsets for parts that become host names.

/// Replaces each `{name}` in `template` with its value. Values must already be validated.
#[must_use]
pub fn render(template: &str, params: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in params {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Placeholder names used in a template, in order.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed '{'")?;
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("unmatched '}'".into());
    }
    Ok(names)
}

/// Validates a template: http or https, a host, no query or fragment, known placeholders only.
pub fn check(template: &str, allowed: &[&str]) -> Result<(), String> {
    if !(template.starts_with("http://") || template.starts_with("https://")) {
        return Err("must start with http:// or https://".into());
    }
    let mut probe = template.to_string();
    for name in placeholders(template)? {
        if !allowed.contains(&name) {
            return Err(format!("unknown placeholder {{{name}}} (allowed: {allowed:?})"));
        }
        probe = probe.replace(&format!("{{{name}}}"), "x");
    }
    let uri: actix_web::http::Uri = probe.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.query().is_some() || probe.contains('#') {
        return Err("must not contain a query or fragment".into());
    }
    Ok(())
}

/// A part that becomes (part of) a host name: `[A-Za-z0-9-]`, 1–63 chars, no edge hyphen.
pub fn check_host_part(value: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(()) } else { Err(format!("'{}' is not a valid host label", printable(value))) }
}

/// A part that becomes one path segment: `[A-Za-z0-9._-]`, 1–128 chars, not `.` or `..`.
pub fn check_path_part(value: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    if ok { Ok(()) } else { Err(format!("'{}' is not a valid name", printable(value))) }
}

/// Echoes client input back safely: at most 64 chars, control characters escaped.
pub(crate) fn printable(value: &str) -> String {
    value.chars().take(64).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_checks() {
        assert_eq!(render("https://{r}.x.com/{d}", &[("r", "a"), ("d", "b")]), "https://a.x.com/b");
        assert!(check("https://{resource}.x.com", &["resource"]).is_ok());
        assert!(check("https://{region}.x.com", &["resource"]).is_err());
        assert!(check("https://x.com/a?b=1", &[]).is_err());
        assert!(check("file:///etc", &[]).is_err());
        assert!(check("https://{resource", &["resource"]).is_err());
    }

    #[test]
    fn host_parts_are_strict() {
        for good in ["myres", "us-east-1", "a1", "ABC"] {
            assert!(check_host_part(good).is_ok(), "{good}");
        }
        for bad in ["evil.com#", "..", "a@b", "a%2Fb", "", "-a", "a-", "a b", "a/b", "x.y", &"a".repeat(64)] {
            assert!(check_host_part(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_parts_are_strict() {
        assert!(check_path_part("gpt-4o.mini_1").is_ok());
        for bad in [".", "..", "a/b", "a%2F", "a?b", "a#b", ""] {
            assert!(check_path_part(bad).is_err(), "{bad}");
        }
    }
}
