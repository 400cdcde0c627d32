//! Dynamic routes: Cloudflare's graph of elements (start, conditional, percentage, rate, model,
//! end), checked when saved and walked for each request, and model aliases (an ordered list
//! of models tried in turn).
//!
//! Checks on save, each error naming the element: one start; every output wired to an element
//! that exists; no cycle; every path ends at an end element (so an end is reachable from
//! everywhere); properties of the right type and range. Both spellings of the rate element are
//! read (`rate` with `limitType`/`key`/`limit`/`window`, and the older `rate_limit` with
//! `interval` and `technique`), and written back as the SDK's.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::error::Error;

/// What a rate element counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// Requests.
    Count,
    /// USD (a budget).
    Cost,
}

/// One element, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    /// Where the walk begins.
    Start { next: String },
    /// `true` or `false` by the conditions.
    Conditional { conditions: Value, on_true: String, on_false: String },
    /// A weighted random split: (percent, element).
    Percentage { outputs: Vec<(f64, String)> },
    /// A counter per key value; within the limit → `success`, else `fallback` (or the end).
    Rate { kind: RateKind, key: String, limit: f64, window: u64, success: String, fallback: Option<String> },
    /// A model; `fallback` when it fails (after its retries) or times out.
    Model { provider: String, model: String, timeout_ms: u64, retries: u8, success: String, fallback: Option<String> },
    /// Returns the last successful answer (or an error when there is none).
    End,
}

/// A parsed, checked route graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The start element's id.
    pub start: String,
    /// Elements by id.
    pub elements: HashMap<String, Element>,
}

fn bad(at: &str, reason: impl Into<String>) -> Error {
    Error::invalid(at, reason)
}

fn output(outputs: &Map<String, Value>, name: &str, at: &str) -> Result<Option<String>, Error> {
    match outputs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            let id = o.get("elementId").or_else(|| o.get("element_id")).and_then(Value::as_str);
            id.map(|s| Some(s.to_string())).ok_or_else(|| bad(&format!("{at}.outputs.{name}.elementId"), "is required"))
        }
        Some(_) => Err(bad(&format!("{at}.outputs.{name}"), "must be {\"elementId\": ...}")),
    }
}

fn required(outputs: &Map<String, Value>, name: &str, at: &str) -> Result<String, Error> {
    output(outputs, name, at)?.ok_or_else(|| bad(&format!("{at}.outputs.{name}"), "must be wired to an element"))
}

fn number(props: &Map<String, Value>, names: &[&str], at: &str) -> Result<f64, Error> {
    names
        .iter()
        .find_map(|n| props.get(*n).and_then(Value::as_f64))
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| bad(&format!("{at}.properties.{}", names[0]), "is required: a number ≥ 0"))
}

const OPERATORS: &[&str] = &["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$and", "$or"];

/// Checks a condition document: fields `body.*`, `headers.*`, `metadata.*`, operators above.
fn check_conditions(c: &Value, at: &str) -> Result<(), Error> {
    let Value::Object(o) = c else { return Err(bad(at, "must be an object")) };
    for (k, v) in o {
        match k.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = v else { return Err(bad(&format!("{at}.{k}"), "must be an array")) };
                for (i, item) in items.iter().enumerate() {
                    check_conditions(item, &format!("{at}.{k}[{i}]"))?;
                }
            }
            field if field.starts_with("body.") || field.starts_with("headers.") || field.starts_with("metadata.") => {
                if let Value::Object(ops) = v
                    && ops.keys().any(|op| op.starts_with('$'))
                {
                    for (op, arg) in ops {
                        if !OPERATORS.contains(&op.as_str()) || op == "$and" || op == "$or" {
                            return Err(bad(
                                &format!("{at}.{field}.{op}"),
                                format!("is not an operator ({})", OPERATORS.join(" ")),
                            ));
                        }
                        if matches!(op.as_str(), "$in" | "$nin") && !arg.is_array() {
                            return Err(bad(&format!("{at}.{field}.{op}"), "takes an array"));
                        }
                        if op == "$exists" && !arg.is_boolean() {
                            return Err(bad(&format!("{at}.{field}.{op}"), "takes true or false"));
                        }
                    }
                }
            }
            other => {
                return Err(bad(
                    &format!("{at}.{other}"),
                    "conditions test body.*, headers.* or metadata.* (or $and, $or)",
                ));
            }
        }
    }
    Ok(())
}

fn parse_element(e: &Value, i: usize) -> Result<(String, Element), Error> {
    let at = format!("elements[{i}]");
    let Value::Object(o) = e else { return Err(bad(&at, "must be an object")) };
    let id = o.get("id").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 128);
    let id = id.ok_or_else(|| bad(&format!("{at}.id"), "is required (1-128 characters)"))?.to_string();
    let at = format!("elements[{i}] ({id})");
    let empty = Map::new();
    let outputs = match o.get("outputs") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err(bad(&format!("{at}.outputs"), "must be an object")),
    };
    let props = match o.get("properties") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err(bad(&format!("{at}.properties"), "must be an object")),
    };
    let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
    let element = match kind {
        "start" => Element::Start { next: required(outputs, "next", &at)? },
        "conditional" => {
            let conditions = props.get("conditions").or_else(|| props.get("condition")).cloned().unwrap_or(Value::Null);
            check_conditions(&conditions, &format!("{at}.properties.conditions"))?;
            Element::Conditional {
                conditions,
                on_true: required(outputs, "true", &at)?,
                on_false: required(outputs, "false", &at)?,
            }
        }
        "percentage" => percentage(outputs, &at)?,
        "rate" | "rate_limit" => {
            let kind = match props.get("limitType").or_else(|| props.get("limit_type")).and_then(Value::as_str) {
                None | Some("count") => RateKind::Count,
                Some("cost") => RateKind::Cost,
                Some(_) => return Err(bad(&format!("{at}.properties.limitType"), "must be \"count\" or \"cost\"")),
            };
            let key = props.get("key").and_then(Value::as_str).unwrap_or("").to_string();
            if !(key.is_empty()
                || key.starts_with("metadata.")
                || key.starts_with("headers.")
                || key.starts_with("body."))
            {
                return Err(bad(
                    &format!("{at}.properties.key"),
                    "names metadata.*, headers.* or body.* (or is empty: one counter)",
                ));
            }
            let limit = number(props, &["limit"], &at)?;
            let window = number(props, &["window", "interval"], &at)?;
            if !(1.0..=31_536_000.0).contains(&window) {
                return Err(bad(&format!("{at}.properties.window"), "seconds, 1 to 31536000"));
            }
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked range")]
            let window = window as u64;
            Element::Rate {
                kind,
                key,
                limit,
                window,
                success: required(outputs, "success", &at)?,
                fallback: output(outputs, "fallback", &at)?,
            }
        }
        "model" => {
            let text = |n: &str| props.get(n).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            let provider = text("provider").ok_or_else(|| bad(&format!("{at}.properties.provider"), "is required"))?;
            let model = text("model").ok_or_else(|| bad(&format!("{at}.properties.model"), "is required"))?;
            let timeout = props.get("timeout").and_then(Value::as_f64).unwrap_or(0.0);
            let retries = props.get("retries").and_then(Value::as_f64).unwrap_or(0.0);
            if !(0.0..=600_000.0).contains(&timeout) {
                return Err(bad(&format!("{at}.properties.timeout"), "ms, 0 (none) to 600000"));
            }
            if !(0.0..=4.0).contains(&retries) {
                return Err(bad(&format!("{at}.properties.retries"), "0 to 4"));
            }
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked ranges")]
            let (timeout_ms, retries) = (timeout as u64, retries as u8);
            Element::Model {
                provider,
                model,
                timeout_ms,
                retries,
                success: required(outputs, "success", &at)?,
                fallback: output(outputs, "fallback", &at)?,
            }
        }
        "end" => Element::End,
        other => {
            return Err(bad(
                &format!("{at}.type"),
                format!("'{other}' is not an element type (start, conditional, percentage, rate, model, end)"),
            ));
        }
    };
    Ok((id, element))
}

/// A percentage element: outputs named "NN%" that add up to 100 (or an "else" for the rest).
fn percentage(outputs: &Map<String, Value>, at: &str) -> Result<Element, Error> {
    if outputs.is_empty() || outputs.len() > 5 {
        return Err(bad(&format!("{at}.outputs"), "a percentage split has 1 to 5 outputs"));
    }
    let mut split = Vec::new();
    let mut rest = None;
    for name in outputs.keys() {
        let to = required(outputs, name, at)?;
        if name == "else" {
            rest = Some(to);
            continue;
        }
        let pct = name.strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok()).filter(|p| *p > 0.0 && *p <= 100.0);
        let pct = pct.ok_or_else(|| bad(&format!("{at}.outputs.{name}"), "outputs are named \"NN%\" (or \"else\")"))?;
        split.push((pct, to));
    }
    let total: f64 = split.iter().map(|(p, _)| p).sum();
    match rest {
        Some(to) if total < 100.0 => split.push((100.0 - total, to)),
        None if (total - 100.0).abs() < 1e-9 => {}
        _ => {
            return Err(bad(&format!("{at}.outputs"), format!("the percentages add up to {total}%, not 100%")));
        }
    }
    Ok(Element::Percentage { outputs: split })
}

fn targets(e: &Element) -> Vec<&String> {
    match e {
        Element::Start { next } => vec![next],
        Element::Conditional { on_true, on_false, .. } => vec![on_true, on_false],
        Element::Percentage { outputs } => outputs.iter().map(|(_, t)| t).collect(),
        Element::Rate { success, fallback, .. } | Element::Model { success, fallback, .. } => {
            std::iter::once(success).chain(fallback.as_ref()).collect()
        }
        Element::End => Vec::new(),
    }
}

/// Depth-first from `id`: refuses a cycle and a path that stops before an end element.
fn visit<'a>(
    id: &'a String,
    map: &'a HashMap<String, Element>,
    state: &mut HashMap<&'a String, u8>,
) -> Result<(), Error> {
    match state.get(id) {
        Some(1) => return Err(bad(&format!("element {id}"), "is part of a cycle")),
        Some(2) => return Ok(()),
        _ => {}
    }
    state.insert(id, 1);
    let e = &map[id];
    if targets(e).is_empty() && !matches!(e, Element::End) {
        return Err(bad(&format!("element {id}"), "a path stops here without reaching an end element"));
    }
    for t in targets(e) {
        visit(t, map, state)?;
    }
    state.insert(id, 2);
    Ok(())
}

/// Parses and checks a route's elements.
pub fn parse(elements: &Value) -> Result<Graph, Error> {
    let Value::Array(list) = elements else { return Err(bad("elements", "must be an array")) };
    if list.len() > 100 {
        return Err(bad("elements", "a route has at most 100 elements"));
    }
    let mut map = HashMap::new();
    let mut order = Vec::new();
    let mut start = None;
    for (i, e) in list.iter().enumerate() {
        let (id, element) = parse_element(e, i)?;
        if matches!(element, Element::Start { .. }) {
            if start.is_some() {
                return Err(bad(&format!("elements[{i}] ({id})"), "a route has exactly one start element"));
            }
            start = Some(id.clone());
        }
        if map.insert(id.clone(), element).is_some() {
            return Err(bad(&format!("elements[{i}] ({id}).id"), "is used by another element"));
        }
        order.push(id);
    }
    let start = start.ok_or_else(|| bad("elements", "a route needs a start element"))?;
    for id in &order {
        for t in targets(&map[id]) {
            if !map.contains_key(t) {
                return Err(bad(
                    &format!("element {id}"),
                    format!("an output points to '{t}', which is not an element"),
                ));
            }
            if matches!(map[t], Element::Start { .. }) {
                return Err(bad(&format!("element {id}"), "an output points back to the start"));
            }
        }
    }
    // No cycles (depth-first, colouring), and every path ends at an end element.
    let mut state = HashMap::new();
    visit(&start, &map, &mut state)?;
    let reached: HashSet<&String> = state.keys().copied().collect();
    if let Some(lost) = order.iter().find(|id| !reached.contains(id)) {
        return Err(bad(&format!("element {lost}"), "cannot be reached from the start"));
    }
    Ok(Graph { start, elements: map })
}

/// Writes elements back in the SDK's spelling (`rate` with `limitType`, `window`; outputs as
/// `{"elementId"}`).
#[must_use]
pub fn normalized(elements: &Value) -> Value {
    let Value::Array(list) = elements else { return elements.clone() };
    Value::Array(
        list.iter()
            .map(|e| {
                let mut e = e.clone();
                if e["type"] == "rate_limit" {
                    e["type"] = json!("rate");
                    if let Some(p) = e.get_mut("properties").and_then(Value::as_object_mut) {
                        if let Some(i) = p.remove("interval") {
                            p.entry("window").or_insert(i);
                        }
                        p.remove("technique");
                        p.entry("limitType").or_insert(json!("count"));
                        p.entry("key").or_insert(json!(""));
                    }
                }
                if let Some(p) = e.get_mut("properties").and_then(Value::as_object_mut)
                    && let Some(c) = p.remove("condition")
                {
                    p.entry("conditions").or_insert(c);
                }
                e
            })
            .collect(),
    )
}

/// What a condition is tested against.
pub struct Context<'a> {
    /// The request body.
    pub body: &'a Value,
    /// Request headers (lower-case names).
    pub headers: &'a dyn Fn(&str) -> Option<String>,
    /// `cf-aig-metadata`.
    pub metadata: &'a Map<String, Value>,
}

impl Context<'_> {
    /// A field's value: `body.a.b`, `headers.x-team`, `metadata.plan`.
    #[must_use]
    pub fn field(&self, path: &str) -> Option<Value> {
        if let Some(rest) = path.strip_prefix("body.") {
            let pointer = format!("/{}", rest.replace('.', "/"));
            return self.body.pointer(&pointer).cloned();
        }
        if let Some(name) = path.strip_prefix("headers.") {
            return (self.headers)(&name.to_ascii_lowercase()).map(Value::String);
        }
        path.strip_prefix("metadata.").and_then(|k| self.metadata.get(k).cloned())
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        // Metadata and headers are text: "5" compares with 5 as a number.
        (Value::String(x), Value::Number(y)) => x.parse::<f64>().ok()?.partial_cmp(&y.as_f64()?),
        (Value::Number(x), Value::String(y)) => x.as_f64()?.partial_cmp(&y.parse::<f64>().ok()?),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    a == b || compare(a, b) == Some(std::cmp::Ordering::Equal)
}

/// Whether the conditions hold (an empty document holds).
#[must_use]
pub fn holds(c: &Value, ctx: &Context<'_>) -> bool {
    let Value::Object(o) = c else { return c.is_null() };
    o.iter().all(|(k, v)| match k.as_str() {
        "$and" => v.as_array().is_some_and(|items| items.iter().all(|i| holds(i, ctx))),
        "$or" => v.as_array().is_some_and(|items| items.iter().any(|i| holds(i, ctx))),
        field => {
            let actual = ctx.field(field);
            match v {
                Value::Object(ops) if ops.keys().any(|op| op.starts_with('$')) => ops.iter().all(|(op, arg)| {
                    let a = actual.as_ref();
                    match op.as_str() {
                        "$eq" => a.is_some_and(|a| equal(a, arg)),
                        "$ne" => a.is_none_or(|a| !equal(a, arg)),
                        "$in" => a.is_some_and(|a| arg.as_array().is_some_and(|l| l.iter().any(|x| equal(a, x)))),
                        "$nin" => a.is_none_or(|a| arg.as_array().is_some_and(|l| !l.iter().any(|x| equal(a, x)))),
                        "$gt" => a.and_then(|a| compare(a, arg)).is_some_and(std::cmp::Ordering::is_gt),
                        "$gte" => a.and_then(|a| compare(a, arg)).is_some_and(std::cmp::Ordering::is_ge),
                        "$lt" => a.and_then(|a| compare(a, arg)).is_some_and(std::cmp::Ordering::is_lt),
                        "$lte" => a.and_then(|a| compare(a, arg)).is_some_and(std::cmp::Ordering::is_le),
                        "$exists" => a.is_some() == arg.as_bool().unwrap_or(true),
                        _ => false,
                    }
                }),
                // A bare value means equality.
                other => actual.as_ref().is_some_and(|a| equal(a, other)),
            }
        }
    })
}

/// Picks a percentage output for `roll` in [0, 100).
#[must_use]
pub fn pick(outputs: &[(f64, String)], roll: f64) -> &str {
    let mut acc = 0.0;
    for (pct, to) in outputs {
        acc += pct;
        if roll < acc {
            return to;
        }
    }
    outputs.last().map_or("", |(_, t)| t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::needless_pass_by_value, reason = "test tables read better with owned values")]
    fn ctx_eval(c: Value) -> bool {
        let body = json!({"model": "dynamic/x", "temperature": 0.2, "user": {"tier": "gold"}});
        let metadata: Map<String, Value> =
            serde_json::from_value(json!({"plan": "free", "seats": "12", "beta": true})).unwrap();
        let headers = |h: &str| (h == "x-team").then(|| "search".to_string());
        holds(&c, &Context { body: &body, headers: &headers, metadata: &metadata })
    }

    /// Every operator, true and false, over body, headers and metadata.
    #[test]
    fn every_operator_decides_as_documented() {
        let table = [
            (json!({"metadata.plan": {"$eq": "free"}}), true),
            (json!({"metadata.plan": {"$eq": "pro"}}), false),
            (json!({"metadata.plan": "free"}), true),
            (json!({"metadata.plan": {"$ne": "pro"}}), true),
            (json!({"metadata.missing": {"$ne": "x"}}), true),
            (json!({"metadata.plan": {"$in": ["pro", "free"]}}), true),
            (json!({"metadata.plan": {"$nin": ["pro", "free"]}}), false),
            (json!({"metadata.seats": {"$gt": 10}}), true),
            (json!({"metadata.seats": {"$gte": 12}}), true),
            (json!({"metadata.seats": {"$lt": 12}}), false),
            (json!({"metadata.seats": {"$lte": 12}}), true),
            (json!({"body.temperature": {"$lt": 0.5}}), true),
            (json!({"body.user.tier": {"$eq": "gold"}}), true),
            (json!({"headers.x-team": {"$eq": "search"}}), true),
            (json!({"headers.x-other": {"$exists": false}}), true),
            (json!({"metadata.beta": {"$exists": true}}), true),
            (json!({"$and": [{"metadata.plan": "free"}, {"headers.x-team": "search"}]}), true),
            (json!({"$and": [{"metadata.plan": "free"}, {"headers.x-team": "ads"}]}), false),
            (json!({"$or": [{"metadata.plan": "pro"}, {"body.user.tier": "gold"}]}), true),
            (json!({"$or": [{"metadata.plan": "pro"}, {"body.user.tier": "silver"}]}), false),
        ];
        for (c, expect) in table {
            assert_eq!(ctx_eval(c.clone()), expect, "{c}");
        }
    }

    #[expect(clippy::needless_pass_by_value, reason = "test tables read better with owned values")]
    fn el(id: &str, kind: &str, outputs: Value, properties: Value) -> Value {
        json!({"id": id, "type": kind, "outputs": outputs, "properties": properties})
    }

    fn to(id: &str) -> Value {
        json!({"elementId": id})
    }

    fn good() -> Vec<Value> {
        vec![
            el("s", "start", json!({"next": to("c")}), Value::Null),
            el(
                "c",
                "conditional",
                json!({"true": to("p"), "false": to("r")}),
                json!({"conditions": {"metadata.plan": {"$eq": "free"}}}),
            ),
            el("p", "percentage", json!({"70%": to("m1"), "30%": to("m2")}), Value::Null),
            el(
                "r",
                "rate_limit",
                json!({"success": to("m2"), "fallback": to("e")}),
                json!({"limit": 10, "interval": 60, "technique": "sliding", "key": "metadata.user"}),
            ),
            el(
                "m1",
                "model",
                json!({"success": to("e"), "fallback": to("m2")}),
                json!({"provider": "openai", "model": "gpt-4o-mini", "timeout": 5000, "retries": 1}),
            ),
            el(
                "m2",
                "model",
                json!({"success": to("e"), "fallback": to("e")}),
                json!({"provider": "anthropic", "model": "claude-sonnet-4-5", "timeout": 0, "retries": 0}),
            ),
            el("e", "end", json!({}), Value::Null),
        ]
    }

    #[test]
    fn a_good_graph_parses_with_both_spellings() {
        let g = parse(&Value::Array(good())).unwrap();
        assert_eq!(g.start, "s");
        assert!(matches!(g.elements["r"], Element::Rate { kind: RateKind::Count, window: 60, .. }));
        let n = normalized(&Value::Array(good()));
        assert_eq!(n[3]["type"], "rate");
        assert_eq!(n[3]["properties"]["window"], 60);
        assert!(n[3]["properties"].get("interval").is_none());
    }

    /// Each broken graph is refused, naming the element at fault.
    #[test]
    fn bad_graphs_name_the_element() {
        let with = |f: &dyn Fn(&mut Vec<Value>)| {
            let mut g = good();
            f(&mut g);
            parse(&Value::Array(g)).unwrap_err().to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            (with(&|g| g.retain(|e| e["id"] != "s")), "needs a start"),
            (with(&|g| g.push(el("s2", "start", json!({"next": to("e")}), Value::Null))), "exactly one start"),
            (with(&|g| g[1]["outputs"]["false"] = to("nowhere")), "element c"),
            (with(&|g| g[5]["outputs"]["success"] = to("m1")), "cycle"),
            (with(&|g| g[2]["outputs"] = json!({"70%": to("m1"), "20%": to("m2")})), "90%"),
            (with(&|g| g[4]["properties"]["provider"] = Value::Null), "elements[4] (m1).properties.provider"),
            (with(&|g| g[1]["properties"]["conditions"] = json!({"metadata.plan": {"$regex": "f"}})), "$regex"),
            (
                with(&|g| g[1]["properties"]["conditions"] = json!({"plan": "free"})),
                "elements[1] (c).properties.conditions.plan",
            ),
            (
                with(&|g| {
                    g[6] = el("e", "model", json!({"success": to("e2")}), json!({"provider": "openai", "model": "m"}));
                }),
                "not an element",
            ),
            (with(&|g| g.push(el("lost", "end", json!({}), Value::Null))), "cannot be reached"),
            (with(&|g| g[0]["type"] = json!("begin")), "not an element type"),
        ];
        for (error, expect) in cases {
            assert!(error.contains(expect), "{error} should say {expect}");
        }
    }

    #[test]
    fn percentages_pick_by_weight() {
        let outputs = vec![(70.0, "a".to_string()), (30.0, "b".to_string())];
        assert_eq!(pick(&outputs, 0.0), "a");
        assert_eq!(pick(&outputs, 69.9), "a");
        assert_eq!(pick(&outputs, 70.0), "b");
        assert_eq!(pick(&outputs, 99.99), "b");
    }
}
