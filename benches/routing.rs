//! Route evaluation and budget reservation per request (budget: ≤ 5 µs, DESIGN §7): walking a
//! dynamic route's decisions (a condition over metadata and body, a percentage split, a count
//! rate element) and reserving a worst case against three spend claims, then settling it.
//!
//! Run: `cargo bench --bench routing`.

#![expect(clippy::unwrap_used, reason = "a benchmark harness: any failure aborts the run")]

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use torii::policy::route::{Context, Element, holds, parse, pick};
use torii::policy::spend::{Claim, Ledger};

fn main() {
    let to = |id: &str| json!({"elementId": id});
    let graph = parse(&json!([
        {"id": "s", "type": "start", "outputs": {"next": to("c")}},
        {"id": "c", "type": "conditional", "outputs": {"true": to("p"), "false": to("r")},
         "properties": {"conditions": {"$and": [{"metadata.plan": {"$in": ["free", "trial"]}}, {"body.temperature": {"$lt": 1}}]}}},
        {"id": "p", "type": "percentage", "outputs": {"70%": to("m1"), "30%": to("r")}},
        {"id": "r", "type": "rate", "outputs": {"success": to("m1"), "fallback": to("m2")},
         "properties": {"limitType": "count", "key": "metadata.user", "limit": 1e12, "window": 60}},
        {"id": "m1", "type": "model", "outputs": {"success": to("e"), "fallback": to("m2")}, "properties": {"provider": "openai", "model": "gpt-4o-mini", "timeout": 0, "retries": 0}},
        {"id": "m2", "type": "model", "outputs": {"success": to("e"), "fallback": to("e")}, "properties": {"provider": "anthropic", "model": "claude", "timeout": 0, "retries": 0}},
        {"id": "e", "type": "end", "outputs": {}}
    ]))
    .unwrap();
    let body = json!({"model": "dynamic/x", "temperature": 0.2, "messages": [{"role": "user", "content": "hi"}]});
    let metadata: Map<String, Value> = serde_json::from_value(json!({"plan": "free", "user": "u-42"})).unwrap();
    let headers = |_: &str| None;
    let ctx = Context { body: &body, headers: &headers, metadata: &metadata };
    let ledger = Arc::new(Ledger::default());
    let claims: Vec<Claim> = (0..3)
        .map(|i| Claim {
            key: format!("gateway:default|rule-{i}"),
            limit: 1e12,
            window: 86_400,
            sliding: i == 0,
            label: String::new(),
        })
        .collect();
    let rounds = 200_000u32;
    let mut now = 1_700_000_000_000u64;
    let mut models = 0usize;
    let start = Instant::now();
    for n in 0..rounds {
        now += 1;
        let mut at = graph.start.clone();
        loop {
            at = match &graph.elements[&at] {
                Element::Start { next } => next.clone(),
                Element::Conditional { conditions, on_true, on_false } => {
                    if holds(conditions, &ctx) {
                        on_true.clone()
                    } else {
                        on_false.clone()
                    }
                }
                Element::Percentage { outputs } => pick(outputs, f64::from(n % 100)).to_string(),
                Element::Rate { key, limit, window, success, .. } => {
                    let value = ctx.field(key).map(|v| v.to_string()).unwrap_or_default();
                    let claim = Claim {
                        key: format!("route:r:{value}"),
                        limit: *limit,
                        window: *window,
                        sliding: true,
                        label: String::new(),
                    };
                    ledger.reserve(std::slice::from_ref(&claim), 1.0, now).unwrap().settle(Some(1.0), now);
                    success.clone()
                }
                Element::Model { .. } => {
                    models += 1;
                    break;
                }
                Element::End => break,
            };
        }
        let held = ledger.reserve(&claims, 0.01, now).unwrap();
        held.settle(Some(0.002), now);
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!(
        "route walk (condition, split, rate) + reserve and settle 3 spend claims: {per:.2} µs per request ({models} model choices)"
    );
}
