//! Guardrails: a gateway's `guardrails` setting (Cloudflare's `S1`–`S13` and `P1` categories, FLAG
//! or BLOCK per phase), and reading an evaluator's answer. The evaluator is a model the operator
//! chooses (Llama Guard for `S1`–`S13`, Prompt Guard for `P1`), called by the gateway.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Categories, by Llama Guard 3's numbering, plus `P1` (prompt injection).
pub const CATEGORIES: &[(&str, &str)] = &[
    ("S1", "Violent crimes"),
    ("S2", "Non-violent crimes"),
    ("S3", "Sex-related crimes"),
    ("S4", "Child sexual exploitation"),
    ("S5", "Defamation"),
    ("S6", "Specialized advice"),
    ("S7", "Privacy"),
    ("S8", "Intellectual property"),
    ("S9", "Indiscriminate weapons"),
    ("S10", "Hate"),
    ("S11", "Suicide and self-harm"),
    ("S12", "Sexual content"),
    ("S13", "Elections"),
    ("P1", "Prompt injection"),
];

/// What a rule does when its category is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// Record and let through.
    Flag,
    /// Refuse (424: 2016 for a prompt, 2017 for a response).
    Block,
}

/// The rules of one phase: category → action (missing categories are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<(String, Action)>);

impl Rules {
    /// Whether any rule is BLOCK (an unavailable evaluator then fails closed).
    #[must_use]
    pub fn blocks(&self) -> bool {
        self.0.iter().any(|(_, a)| *a == Action::Block)
    }

    /// Whether a Llama Guard (`S*`) evaluation is needed.
    #[must_use]
    pub fn needs_safety(&self) -> bool {
        self.0.iter().any(|(c, _)| c.starts_with('S'))
    }

    /// Whether a Prompt Guard (`P1`) evaluation is needed.
    #[must_use]
    pub fn needs_injection(&self) -> bool {
        self.0.iter().any(|(c, _)| c == "P1")
    }

    /// The strongest action for the categories found (only those with a rule count).
    #[must_use]
    pub fn decide(&self, found: &[String]) -> Option<Action> {
        self.0.iter().filter(|(c, _)| found.contains(c)).map(|(_, a)| *a).max()
    }
}

/// A gateway's guardrails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Checked before forwarding.
    pub prompt: Rules,
    /// Checked on the answer.
    pub response: Rules,
}

fn phase(v: Option<&Value>, name: &str) -> Result<Rules, Error> {
    let mut rules = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, a) in map {
                let field = format!("guardrails.{name}.{k}");
                if !CATEGORIES.iter().any(|(c, _)| c == k) {
                    return Err(Error::invalid(&field, "is not a category (S1–S13, P1)"));
                }
                let action = match a.as_str() {
                    Some("FLAG") => Action::Flag,
                    Some("BLOCK") => Action::Block,
                    _ => return Err(Error::invalid(&field, "must be \"FLAG\" or \"BLOCK\"")),
                };
                rules.push((k.clone(), action));
            }
        }
        Some(_) => return Err(Error::invalid(format!("guardrails.{name}"), "must be an object or null")),
    }
    Ok(Rules(rules))
}

/// Parses and checks a gateway's `guardrails` value; `Ok(None)`: off.
pub fn parse(value: &Value) -> Result<Option<Guardrails>, Error> {
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(Error::invalid("guardrails", "must be an object or null")),
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "prompt" | "response")) {
        return Err(Error::invalid(format!("guardrails.{k}"), "is not a field Torii knows (prompt, response)"));
    }
    let g =
        Guardrails { prompt: phase(obj.get("prompt"), "prompt")?, response: phase(obj.get("response"), "response")? };
    Ok((!g.prompt.0.is_empty() || !g.response.0.is_empty()).then_some(g))
}

/// Reads Llama Guard's answer: `safe`, or `unsafe` and a line of categories (`S1,S10`).
/// `None`: not an answer of that shape (the evaluator counts as unavailable).
#[must_use]
pub fn read_safety(text: &str) -> Option<Vec<String>> {
    let mut lines = text.trim().lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next()?.to_ascii_lowercase().as_str() {
        "safe" => Some(Vec::new()),
        "unsafe" => {
            let cats: Vec<String> = lines
                .next()
                .unwrap_or("")
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(str::trim)
                .filter(|c| c.len() >= 2 && c.starts_with('S') && c[1..].bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
                .collect();
            Some(cats)
        }
        _ => None,
    }
}

/// Reads a prompt-injection classifier's answer: a label (`BENIGN` / `MALICIOUS`, `INJECTION`,
/// `JAILBREAK`, `LABEL_0` / `LABEL_1`) as text, or JSON carrying one (Workers AI's
/// `[{label, score}]`, a top-level or `result` object). `None`: not readable.
#[must_use]
pub fn read_injection(text: &str) -> Option<bool> {
    fn label(l: &str) -> Option<bool> {
        match l.trim().trim_matches('"').to_ascii_uppercase().as_str() {
            "BENIGN" | "SAFE" | "LABEL_0" => Some(false),
            "MALICIOUS" | "INJECTION" | "JAILBREAK" | "UNSAFE" | "LABEL_1" => Some(true),
            _ => None,
        }
    }
    fn from_json(v: &Value) -> Option<bool> {
        match v {
            Value::Array(items) => {
                // The highest-scoring label wins.
                let best = items
                    .iter()
                    .filter_map(|i| {
                        Some((i.get("label")?.as_str()?, i.get("score").and_then(Value::as_f64).unwrap_or(1.0)))
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))?;
                label(best.0)
            }
            Value::Object(o) => {
                o.get("result").and_then(from_json).or_else(|| o.get("label").and_then(Value::as_str).and_then(label))
            }
            Value::String(s) => label(s),
            _ => None,
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => from_json(&v),
        Err(_) => label(text.lines().next().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configuration_and_answers() {
        let g = parse(&json!({"prompt": {"S1": "BLOCK", "P1": "FLAG"}, "response": {"S10": "FLAG"}})).unwrap().unwrap();
        assert!(g.prompt.blocks() && g.prompt.needs_injection() && g.prompt.needs_safety());
        assert_eq!(g.prompt.decide(&["S1".into()]), Some(Action::Block));
        assert_eq!(g.prompt.decide(&["S2".into()]), None);
        assert!(parse(&json!({"prompt": {}, "response": null})).unwrap().is_none());
        let e = parse(&json!({"prompt": {"S14": "BLOCK"}})).unwrap_err().to_string();
        assert!(e.contains("guardrails.prompt.S14"), "{e}");
        let e = parse(&json!({"prompt": {"S1": "REDACT"}})).unwrap_err().to_string();
        assert!(e.contains("guardrails.prompt.S1"), "{e}");
        assert_eq!(read_safety("safe"), Some(vec![]));
        assert_eq!(read_safety("\n\nunsafe\nS1,S10"), Some(vec!["S1".to_string(), "S10".to_string()]));
        assert_eq!(read_safety("I cannot help"), None);
        assert_eq!(read_injection(r#"[{"label":"BENIGN","score":0.1},{"label":"MALICIOUS","score":0.9}]"#), Some(true));
        assert_eq!(read_injection("BENIGN"), Some(false));
        assert_eq!(read_injection("hmm"), None);
    }
}
