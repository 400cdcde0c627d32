//! DLP scanning cost: a chat request body scanned with every built-in profile on (the budget is
//! 5 µs per KB, DESIGN §7), clean and with matches to redact; and the stream scanner per event
//! (what REDACT adds to a streamed answer).
//!
//! Run: `cargo bench --bench dlp`.

#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a benchmark harness: any failure aborts the run; float conversions are for reporting"
)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use torii::policy::detectors::BUILT_INS;
use torii::policy::dlp::{Action, Check, Dlp, Policy, scan_body};
use torii::policy::stream::SseScanner;

fn side(action: Action, check: Check) -> Arc<torii::policy::dlp::Side> {
    let policy = Policy {
        id: "all".into(),
        action,
        checks: vec![check],
        profiles: BUILT_INS.iter().map(|b| b.id.to_string()).collect(),
    };
    let dlp = Dlp::compile(&[policy], &[]).unwrap();
    if check == Check::Request { dlp.request.unwrap() } else { dlp.response.unwrap() }
}

fn body(kb: usize, with_secrets: bool) -> Vec<u8> {
    let prose = "The quarterly report covers revenue, churn and the roadmap for the next release. ";
    let mut text = String::new();
    while text.len() < kb * 1024 {
        if with_secrets && text.len() % 2048 < prose.len() {
            text.push_str("Reach me at jane.doe@example.com or 4111 1111 1111 1111. ");
        }
        text.push_str(prose);
    }
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text}]})
    .to_string()
    .into_bytes()
}

fn per_kb(label: &str, kb: usize, with_secrets: bool) {
    let side = side(Action::Redact, Check::Request);
    let body = body(kb, with_secrets);
    let rounds = (2_000 / kb).max(20);
    let start = Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        let scan = scan_body(&side, &body, Some("application/json")).unwrap();
        found += scan.findings.findings.len();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let per = us / (body.len() as f64 / 1024.0);
    println!("{label:34} {kb:>4} KB  {us:>9.1} µs/body  {per:>6.2} µs/KB  (profiles found {})", found / rounds);
}

fn stream(events: usize) {
    let side = side(Action::Redact, Check::Response);
    let chunks: Vec<Bytes> = (0..events)
        .map(|i| {
            let piece = if i % 50 == 10 { "card 4111 1111 " } else if i % 50 == 11 { "1111 1111 ok " } else { "some words " };
            let e = json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]});
            Bytes::from(format!("data: {e}\n\n"))
        })
        .collect();
    let start = Instant::now();
    let mut out = 0;
    let mut s = SseScanner::new(side, Box::new(|_| {}));
    for c in &chunks {
        out += s.pass(c.clone()).len();
    }
    out += s.rest().len();
    let per = start.elapsed().as_secs_f64() * 1e6 / events as f64;
    println!("stream REDACT, every profile          {events} events  {per:>6.2} µs/event  ({out} bytes out)");
}

fn main() {
    println!("DLP with all {} built-in profiles", BUILT_INS.len());
    for kb in [1, 16, 256] {
        per_kb("request JSON, clean", kb, false);
        per_kb("request JSON, matches redacted", kb, true);
    }
    stream(10_000);
}
