//! Data-loss prevention: a gateway's `dlp` setting (Cloudflare's legacy and current shapes, plus
//! Torii's REDACT action), compiled into one scanner per direction, and the scan of a body.
//!
//! Bodies are scanned as text: a JSON body's string values (tool arguments and results
//! included; `data:` URLs and web addresses skipped), any other text body whole. Binary bodies
//! are not scanned. The matched text itself is never stored or sent anywhere: findings name the
//! profile, the entry and the policy only.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::detectors::{CustomPattern, Found, Scanner, is_built_in};
use crate::error::Error;

/// What a policy does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// Record it (log, `cf-aig-dlp`), let the request through.
    Flag,
    /// Replace the match with `[REDACTED:{label}]` and go on.
    Redact,
    /// Refuse: 424 with 2029 (request) or 2030 (response).
    Block,
}

impl Action {
    /// Cloudflare's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "FLAG",
            Self::Redact => "REDACT",
            Self::Block => "BLOCK",
        }
    }
}

/// Which body a policy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Check {
    /// The request, before it goes upstream.
    Request,
    /// The response, before (or as) it reaches the client.
    Response,
}

impl Check {
    /// Cloudflare's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "REQUEST",
            Self::Response => "RESPONSE",
        }
    }
}

/// One enabled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The operator's name for it.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// Which bodies it checks.
    pub checks: Vec<Check>,
    /// Profile ids.
    pub profiles: Vec<String>,
}

fn bad(field: &str, reason: &str) -> Error {
    Error::invalid(field, reason)
}

fn action(v: Option<&Value>, field: &str) -> Result<Action, Error> {
    match v.and_then(Value::as_str) {
        Some("FLAG") => Ok(Action::Flag),
        Some("BLOCK") => Ok(Action::Block),
        Some("REDACT") => Ok(Action::Redact),
        _ => Err(bad(field, "must be \"FLAG\", \"BLOCK\" or \"REDACT\"")),
    }
}

fn enabled(obj: &Map<String, Value>, field: &str) -> Result<bool, Error> {
    match obj.get("enabled") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(field, "must be a boolean")),
    }
}

fn profiles(v: Option<&Value>, field: &str, known: &dyn Fn(&str) -> bool) -> Result<Vec<String>, Error> {
    let Some(Value::Array(items)) = v else { return Err(bad(field, "must be a non-empty array of profile ids")) };
    if items.is_empty() {
        return Err(bad(field, "must be a non-empty array of profile ids"));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = format!("{field}[{i}]");
        let id = item.as_str().ok_or_else(|| bad(&name, "must be a profile id"))?;
        if !known(id) {
            return Err(bad(
                &name,
                &format!(
                    "names no DLP profile ('{id}'); built-in ids are credit-card, us-ssn, iban, email, phone, credentials"
                ),
            ));
        }
        out.push(id.to_string());
    }
    Ok(out)
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), Error> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(&format!("{at}.{k}"), "is not a field Torii knows (it would have no effect)")),
        None => Ok(()),
    }
}

/// Parses and checks a gateway's `dlp` value; `known` says whether a profile id exists.
/// `Ok(None)`: off (null, or `enabled: false`, or no enabled policy).
pub fn parse(value: &Value, known: &dyn Fn(&str) -> bool) -> Result<Option<Vec<Policy>>, Error> {
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(bad("dlp", "must be an object or null")),
    };
    only_fields(obj, &["enabled", "action", "profiles", "policies"], "dlp")?;
    let on = enabled(obj, "dlp.enabled")?;
    let mut out = Vec::new();
    if let Some(list) = obj.get("policies").filter(|v| !v.is_null()) {
        if obj.contains_key("action") || obj.contains_key("profiles") {
            return Err(bad("dlp", "give either policies or the legacy action and profiles, not both"));
        }
        let Value::Array(list) = list else { return Err(bad("dlp.policies", "must be an array")) };
        let mut ids = BTreeSet::new();
        for (i, p) in list.iter().enumerate() {
            let at = format!("dlp.policies[{i}]");
            let Value::Object(p) = p else { return Err(bad(&at, "must be an object")) };
            only_fields(p, &["id", "action", "check", "enabled", "profiles"], &at)?;
            let id = p.get("id").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 128);
            let id = id.ok_or_else(|| bad(&format!("{at}.id"), "must be a name of 1–128 characters"))?;
            if !ids.insert(id.to_string()) {
                return Err(bad(&format!("{at}.id"), "is used by another policy"));
            }
            let action = action(p.get("action"), &format!("{at}.action"))?;
            let checks = match p.get("check") {
                None | Some(Value::Null) => vec![Check::Request, Check::Response],
                Some(Value::Array(c)) if !c.is_empty() => {
                    let mut checks = Vec::new();
                    for (j, c) in c.iter().enumerate() {
                        checks.push(match c.as_str() {
                            Some("REQUEST") => Check::Request,
                            Some("RESPONSE") => Check::Response,
                            _ => return Err(bad(&format!("{at}.check[{j}]"), "must be \"REQUEST\" or \"RESPONSE\"")),
                        });
                    }
                    checks.sort();
                    checks.dedup();
                    checks
                }
                Some(_) => return Err(bad(&format!("{at}.check"), "must be a non-empty array")),
            };
            let profiles = profiles(p.get("profiles"), &format!("{at}.profiles"), known)?;
            if enabled(p, &format!("{at}.enabled"))? {
                out.push(Policy { id: id.to_string(), action, checks, profiles });
            }
        }
    } else if obj.contains_key("action") || obj.contains_key("profiles") || on {
        let action = action(obj.get("action"), "dlp.action")?;
        let profiles = profiles(obj.get("profiles"), "dlp.profiles", known)?;
        out.push(Policy { id: "default".into(), action, checks: vec![Check::Request, Check::Response], profiles });
    }
    Ok((on && !out.is_empty()).then_some(out))
}

/// A gateway's policies compiled for one direction.
#[derive(Debug)]
pub struct Side {
    /// Which body.
    pub check: Check,
    scanner: Scanner,
    /// For each scanner entry: the policies (indexes into `policies`) that use its profile.
    by_entry: Vec<Vec<usize>>,
    policies: Vec<Policy>,
    /// The strongest action any policy of this side can take.
    pub strongest: Action,
}

/// A gateway's DLP, compiled.
#[derive(Debug, Default)]
pub struct Dlp {
    /// Request-side policies.
    pub request: Option<std::sync::Arc<Side>>,
    /// Response-side policies.
    pub response: Option<std::sync::Arc<Side>>,
}

impl Dlp {
    /// Compiles the enabled policies (custom profiles looked up in `custom`).
    pub fn compile(policies: &[Policy], custom: &[CustomPattern<'_>]) -> Result<Self, String> {
        let side = |check: Check| -> Result<Option<std::sync::Arc<Side>>, String> {
            let mine: Vec<Policy> = policies.iter().filter(|p| p.checks.contains(&check)).cloned().collect();
            if mine.is_empty() {
                return Ok(None);
            }
            let ids: Vec<String> =
                mine.iter().flat_map(|p| p.profiles.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
            let scanner = Scanner::new(&ids, custom)?;
            let by_entry = scanner
                .entries()
                .iter()
                .map(|e| {
                    mine.iter().enumerate().filter(|(_, p)| p.profiles.contains(&e.profile)).map(|(i, _)| i).collect()
                })
                .collect();
            let strongest = mine.iter().map(|p| p.action).max().unwrap_or(Action::Flag);
            Ok(Some(std::sync::Arc::new(Side { check, scanner, by_entry, policies: mine, strongest })))
        };
        Ok(Self { request: side(Check::Request)?, response: side(Check::Response)? })
    }
}

/// One profile's findings in one direction (Cloudflare's `cf-aig-dlp` finding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Profile id.
    pub profile: String,
    /// Entries of the profile that matched.
    pub entries: Vec<String>,
    /// Policies that matched.
    pub policies: Vec<String>,
    /// Which body.
    pub check: Check,
}

/// What DLP decided for one request, across both directions (stored with the log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// The strongest action taken; `None` when nothing matched.
    pub action: Option<Action>,
    /// By profile and direction.
    pub findings: Vec<Finding>,
}

impl Findings {
    /// Whether anything matched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    /// Adds another direction's (or another piece's) findings.
    pub fn merge(&mut self, other: Self) {
        self.action = self.action.max(other.action);
        for f in other.findings {
            match self.findings.iter_mut().find(|x| x.profile == f.profile && x.check == f.check) {
                Some(x) => {
                    for e in f.entries {
                        if !x.entries.contains(&e) {
                            x.entries.push(e);
                        }
                    }
                    for p in f.policies {
                        if !x.policies.contains(&p) {
                            x.policies.push(p);
                        }
                    }
                }
                None => self.findings.push(f),
            }
        }
    }

    /// The `cf-aig-dlp` header value (Cloudflare's shape; never the matched text).
    #[must_use]
    pub fn header(&self) -> Option<String> {
        let action = self.action?;
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "profile": {"context": {}, "entry_ids": f.entries, "profile_id": f.profile},
                    "policy_ids": f.policies,
                    "check": f.check.as_str(),
                })
            })
            .collect();
        Some(serde_json::json!({"findings": findings, "action": action.as_str()}).to_string())
    }
}

/// A side's verdict on some matches: what they mean and which of them to replace.
pub struct Verdict {
    /// Findings (empty when nothing matched).
    pub findings: Findings,
    /// Matches to replace, with their label (REDACT).
    pub redact: Vec<(usize, usize, String)>,
}

impl Side {
    /// Scans `text`.
    #[must_use]
    pub fn scan(&self, text: &str) -> Vec<Found> {
        self.scanner.scan(text)
    }

    /// Bytes at the end of a stream's text that could still grow into a match.
    #[must_use]
    pub fn holdback(&self, text: &str) -> usize {
        self.scanner.holdback(text)
    }

    /// Whether any policy of this side redacts.
    #[must_use]
    pub fn redacts(&self) -> bool {
        self.policies.iter().any(|p| p.action == Action::Redact)
    }

    /// What `found` means under this side's policies.
    #[must_use]
    pub fn judge(&self, found: &[Found]) -> Verdict {
        let mut findings = Findings::default();
        let mut redact = Vec::new();
        for f in found {
            let entry = &self.scanner.entries()[f.entry];
            let policies = &self.by_entry[f.entry];
            let strongest = policies.iter().map(|&i| self.policies[i].action).max().unwrap_or(Action::Flag);
            if strongest == Action::Redact {
                redact.push((f.start, f.end, entry.label.clone()));
            }
            findings.merge(Findings {
                action: Some(strongest),
                findings: vec![Finding {
                    profile: entry.profile.clone(),
                    entries: vec![entry.entry.clone()],
                    policies: policies.iter().map(|&i| self.policies[i].id.clone()).collect(),
                    check: self.check,
                }],
            });
        }
        Verdict { findings, redact }
    }
}

/// Whether a JSON string is text worth scanning (not a `data:` URL, not a bare web address).
fn scannable(s: &str) -> bool {
    !(s.starts_with("data:")
        || ((s.starts_with("https://") || s.starts_with("http://")) && !s.contains(char::is_whitespace)))
}

/// Visits a JSON value's scannable strings in a fixed order (keys of an object are ordered).
fn visit_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) if scannable(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| visit_strings(x, out)),
        _ => {}
    }
}

/// The same strings as [`visit_strings`], mutably, in the same order.
fn visit_strings_mut<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match v {
        Value::String(s) if scannable(s) => out.push(s),
        Value::Array(a) => a.iter_mut().for_each(|x| visit_strings_mut(x, out)),
        Value::Object(o) => o.values_mut().for_each(|x| visit_strings_mut(x, out)),
        _ => {}
    }
}

/// Replaces `ranges` (sorted, possibly overlapping) in `text` with `[REDACTED:{label}]`.
#[must_use]
pub fn redact_text(text: &str, ranges: &[(usize, usize, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, label) in ranges {
        if *end <= at {
            continue;
        }
        let start = (*start).max(at);
        out.push_str(&text[at..start]);
        out.push_str("[REDACTED:");
        out.push_str(label);
        out.push(']');
        at = *end;
    }
    out.push_str(&text[at..]);
    out
}

/// The result of scanning a whole body.
pub struct BodyScan {
    /// What matched.
    pub findings: Findings,
    /// The body with its REDACT matches replaced, when there were any.
    pub redacted: Option<Vec<u8>>,
}

/// Scans a whole body: JSON by its strings, other UTF-8 text whole; `None` for a body that is
/// not text (not scanned).
#[must_use]
pub fn scan_body(side: &Side, body: &[u8], content_type: Option<&str>) -> Option<BodyScan> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let looks_json = ct.contains("json") || (ct.is_empty() && body.first().is_some_and(|b| matches!(b, b'{' | b'[')));
    if looks_json && let Ok(mut value) = serde_json::from_slice::<Value>(body) {
        return Some(scan_json(side, &mut value));
    }
    if !(ct.is_empty() || ct.starts_with("text/") || looks_json || ct.contains("x-www-form-urlencoded")) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let verdict = side.judge(&side.scan(text));
    let redacted = (!verdict.redact.is_empty()).then(|| redact_text(text, &verdict.redact).into_bytes());
    Some(BodyScan { findings: verdict.findings, redacted })
}

/// Scans a JSON document's strings as one text (a separator between strings keeps a match from
/// spanning two of them).
fn scan_json(side: &Side, value: &mut Value) -> BodyScan {
    let mut strings = Vec::new();
    visit_strings(value, &mut strings);
    let mut text = String::with_capacity(strings.iter().map(|s| s.len() + 1).sum());
    let mut spans = Vec::with_capacity(strings.len());
    for s in strings {
        spans.push((text.len(), text.len() + s.len()));
        text.push_str(s);
        text.push('\n');
    }
    let verdict = side.judge(&side.scan(&text));
    if verdict.redact.is_empty() {
        return BodyScan { findings: verdict.findings, redacted: None };
    }
    let mut targets = Vec::new();
    visit_strings_mut(value, &mut targets);
    for (target, (a, b)) in targets.into_iter().zip(spans) {
        let mine: Vec<(usize, usize, String)> = verdict
            .redact
            .iter()
            .filter(|(s, e, _)| *s < b && *e > a)
            .map(|(s, e, l)| ((*s).max(a) - a, (*e).min(b) - a, l.clone()))
            .collect();
        if !mine.is_empty() {
            *target = redact_text(&text[a..b], &mine);
        }
    }
    let redacted = serde_json::to_vec(value).ok();
    BodyScan { findings: verdict.findings, redacted }
}

/// Whether `id` is a profile a policy may name, given the custom profiles' ids.
#[must_use]
pub fn profile_exists(id: &str, custom_ids: &[String]) -> bool {
    is_built_in(id) || custom_ids.iter().any(|c| c == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known(id: &str) -> bool {
        is_built_in(id)
    }

    #[test]
    fn both_shapes_parse_and_bad_ones_name_the_field() {
        let legacy = parse(&json!({"enabled": true, "action": "BLOCK", "profiles": ["us-ssn"]}), &known).unwrap();
        assert_eq!(legacy.unwrap()[0].action, Action::Block);
        let current = json!({"enabled": true, "policies": [
            {"id": "pii", "action": "REDACT", "check": ["REQUEST"], "enabled": true, "profiles": ["email", "phone"]},
            {"id": "off", "action": "FLAG", "check": ["RESPONSE"], "enabled": false, "profiles": ["iban"]}]});
        let p = parse(&current, &known).unwrap().unwrap();
        assert_eq!((p.len(), p[0].checks.as_slice()), (1, &[Check::Request][..]));
        assert!(parse(&json!({"enabled": false}), &known).unwrap().is_none());
        assert!(parse(&Value::Null, &known).unwrap().is_none());
        for (bad, field) in [
            (json!({"enabled": true, "action": "DROP", "profiles": ["email"]}), "dlp.action"),
            (json!({"enabled": true, "action": "FLAG", "profiles": ["nope"]}), "dlp.profiles[0]"),
            (
                json!({"policies": [{"id": "a", "action": "FLAG", "check": ["BOTH"], "profiles": ["email"]}]}),
                "dlp.policies[0].check[0]",
            ),
            (
                json!({"policies": [{"id": "a", "action": "FLAG", "profiles": ["email"], "mode": 1}]}),
                "dlp.policies[0].mode",
            ),
            (json!({"enabled": true, "sampling": 0.5}), "dlp.sampling"),
        ] {
            let e = parse(&bad, &known).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn json_bodies_are_redacted_by_string() {
        let policies =
            parse(&json!({"policies": [{"id": "r", "action": "REDACT", "profiles": ["us-ssn", "email"]}]}), &known)
                .unwrap()
                .unwrap();
        let dlp = Dlp::compile(&policies, &[]).unwrap();
        let side = dlp.request.as_ref().unwrap();
        let body = br#"{"messages":[{"role":"user","content":"SSN 123-45-6789, mail a.b@example.com"}],"model":"m"}"#;
        let scan = scan_body(side, body, Some("application/json")).unwrap();
        let out: Value = serde_json::from_slice(&scan.redacted.unwrap()).unwrap();
        assert_eq!(out["messages"][0]["content"], "SSN [REDACTED:us_ssn], mail [REDACTED:email]");
        assert_eq!(scan.findings.action, Some(Action::Redact));
        let header = scan.findings.header().unwrap();
        assert!(!header.contains("6789") && header.contains("\"profile_id\":\"us-ssn\""), "{header}");
    }
}
