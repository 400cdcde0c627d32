//! DLP on a streamed (SSE) response, without stopping the stream.
//!
//! The text of a streamed answer arrives in pieces, one per event (`delta.content`, `delta.text`,
//! tool-call `arguments`, ...), so a card number can straddle two events, or two network chunks of
//! one event. The events' text is followed as one running text: an event goes out as soon as
//! none of its text could still be part of a match that a later event completes (the detectors
//! say how much of a text's end could still grow into a match); only those events wait. A
//! match found is replaced in the events that carry it — the placeholder where the match starts,
//! nothing for its rest — and each event is re-encoded only when its text changed.
//!
//! FLAG-only policies see the same running text but never hold anything back.

use std::collections::VecDeque;
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;

use super::detectors::Found;
use super::dlp::{Findings, Side};

/// Keys whose string values are the streamed text in the providers' event formats.
const TEXT_KEYS: &[&str] =
    &["content", "text", "arguments", "partial_json", "delta", "thinking", "reasoning_content", "refusal"];

/// Largest unfinished event kept while waiting for its end (a larger one passes unscanned).
const MAX_PARTIAL: usize = 1 << 20;
/// Most bytes of events held back at once (beyond it they go out as they are: memory stays
/// bounded whatever the stream sends).
const MAX_HELD: usize = 1 << 20;

struct Held {
    /// The event's bytes as received.
    raw: Bytes,
    /// Its `data:` JSON and the lines before it, when it has text.
    parsed: Option<(Vec<u8>, Value)>,
    /// Absolute ranges of its text pieces in the running text.
    slots: Vec<(usize, usize)>,
}

/// Follows a stream's events, masking (REDACT) or noting (FLAG) what the side's detectors find.
pub struct SseScanner {
    side: Arc<Side>,
    redacting: bool,
    partial: Vec<u8>,
    held: VecDeque<Held>,
    /// The running text not yet settled, starting at absolute offset `base`.
    text: String,
    base: usize,
    report: Box<dyn FnMut(Findings)>,
}

/// The streamed text of a JSON document (an event, or a whole answer): its strings under the
/// text keys, in order.
#[must_use]
pub fn text_of(v: &Value) -> String {
    let mut pieces = Vec::new();
    text_slots(v, None, &mut pieces);
    pieces.concat()
}

fn text_slots<'a>(v: &'a Value, key: Option<&str>, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) if key.is_some_and(|k| TEXT_KEYS.contains(&k)) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| text_slots(x, key, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| text_slots(x, Some(k), out)),
        _ => {}
    }
}

fn text_slots_mut<'a>(v: &'a mut Value, key: Option<&str>, out: &mut Vec<&'a mut String>) {
    match v {
        Value::String(s) if key.is_some_and(|k| TEXT_KEYS.contains(&k)) => out.push(s),
        Value::Array(a) => a.iter_mut().for_each(|x| text_slots_mut(x, key, out)),
        Value::Object(o) => o.iter_mut().for_each(|(k, x)| text_slots_mut(x, Some(k), out)),
        _ => {}
    }
}

/// The end of the first complete event in `buf` (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Splits an event into the lines before its `data:` and the data's JSON.
fn parse_event(raw: &[u8]) -> Option<(Vec<u8>, Value)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut head = Vec::new();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if !line.is_empty() {
            head.extend_from_slice(line.as_bytes());
            head.push(b'\n');
        }
    }
    let value: Value = serde_json::from_str(&data).ok()?;
    value.is_object().then_some((head, value))
}

impl SseScanner {
    /// A scanner for one response; what it finds goes to `report` as events settle.
    #[must_use]
    pub fn new(side: Arc<Side>, report: Box<dyn FnMut(Findings)>) -> Self {
        let redacting = side.redacts();
        Self { side, redacting, partial: Vec::new(), held: VecDeque::new(), text: String::new(), base: 0, report }
    }

    /// What the client gets now for `chunk`.
    pub fn pass(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Vec::new();
        self.partial.extend_from_slice(&chunk);
        while let Some(end) = event_end(&self.partial) {
            let raw = Bytes::from(self.partial.drain(..end).collect::<Vec<u8>>());
            self.push(raw);
        }
        let held: usize = self.held.iter().map(|h| h.raw.len()).sum();
        if self.partial.len() > MAX_PARTIAL || held > MAX_HELD {
            // Not an event stream we can follow: settle everything and let the rest through.
            self.settle(true, &mut out);
            out.append(&mut self.partial);
        } else {
            self.settle(false, &mut out);
        }
        if self.redacting { Bytes::from(out) } else { chunk }
    }

    /// What the client gets when the upstream body has ended.
    pub fn rest(&mut self) -> Bytes {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let raw = Bytes::from(std::mem::take(&mut self.partial));
            self.push(raw);
        }
        self.settle(true, &mut out);
        if self.redacting { Bytes::from(out) } else { Bytes::new() }
    }

    fn push(&mut self, raw: Bytes) {
        let mut parsed = parse_event(&raw);
        let mut slots = Vec::new();
        if let Some((_, value)) = parsed.as_ref() {
            let mut pieces = Vec::new();
            text_slots(value, None, &mut pieces);
            for p in pieces {
                let start = self.base + self.text.len();
                self.text.push_str(p);
                slots.push((start, start + p.len()));
            }
        }
        if slots.is_empty() {
            parsed = None;
        }
        self.held.push_back(Held { raw, parsed, slots });
    }

    /// Sends the events whose text is settled; `all` at the end of the stream.
    fn settle(&mut self, all: bool, out: &mut Vec<u8>) {
        let found: Vec<Found> = self
            .side
            .scan(&self.text)
            .into_iter()
            .map(|f| Found { start: f.start + self.base, end: f.end + self.base, ..f })
            .collect();
        let mut safe = self.base + self.text.len() - if all { 0 } else { self.side.holdback(&self.text) };
        // A match that crosses the line is not settled yet: neither is its start.
        while let Some(s) = found.iter().filter(|f| f.start < safe && f.end > safe).map(|f| f.start).min() {
            safe = s;
        }
        let settled: Vec<Found> = found.into_iter().filter(|f| f.end <= safe).collect();
        let verdict = self.side.judge(&settled);
        while let Some(front) = self.held.front() {
            if front.slots.last().is_some_and(|&(_, end)| end > safe) {
                break;
            }
            let Some(event) = self.held.pop_front() else { break };
            if self.redacting {
                out.extend_from_slice(&Self::encode(event, &verdict.redact));
            }
        }
        let held_from =
            self.held.iter().find_map(|h| h.slots.first().map(|s| s.0)).unwrap_or(self.base + self.text.len());
        // A settled match that reaches into a held event stays in the text, whole: the held
        // event loses its part of it when it goes out.
        let keep_from = settled
            .iter()
            .filter(|f| f.start < held_from && f.end > held_from)
            .map(|f| f.start)
            .min()
            .unwrap_or(held_from);
        let reported: Vec<Found> = settled.into_iter().filter(|f| f.end <= keep_from).collect();
        if !reported.is_empty() {
            let findings = self.side.judge(&reported).findings;
            (self.report)(findings);
        }
        let drop = keep_from - self.base;
        self.text.drain(..drop);
        self.base = keep_from;
    }

    /// The event as the client gets it: its text with the matches it carries replaced.
    fn encode(event: Held, redact: &[(usize, usize, String)]) -> Bytes {
        let Some((head, mut value)) = event.parsed else { return event.raw };
        let touched = redact.iter().any(|(s, e, _)| event.slots.iter().any(|(a, b)| s < b && e > a));
        if !touched {
            return event.raw;
        }
        let mut targets = Vec::new();
        text_slots_mut(&mut value, None, &mut targets);
        for (target, &(a, b)) in targets.into_iter().zip(&event.slots) {
            let mine: Vec<(usize, usize, String)> = redact
                .iter()
                .filter(|(s, e, _)| *s < b && *e > a)
                // The placeholder goes where the match starts; later pieces lose their part.
                .map(|(s, e, l)| ((*s).max(a) - a, (*e).min(b) - a, if *s >= a { l.clone() } else { String::new() }))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut text = String::with_capacity(target.len());
            let mut at = 0;
            for (s, e, label) in &mine {
                if *e <= at {
                    continue;
                }
                let s = (*s).max(at);
                text.push_str(&target[at..s]);
                if !label.is_empty() {
                    text.push_str("[REDACTED:");
                    text.push_str(label);
                    text.push(']');
                }
                at = *e;
            }
            text.push_str(&target[at..]);
            *target = text;
        }
        let mut out = head;
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(value.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detectors::is_built_in;
    use crate::policy::dlp::{Dlp, parse};

    fn side(action: &str) -> Arc<Side> {
        let v = serde_json::json!({"policies": [{"id": "p", "action": action, "check": ["RESPONSE"], "profiles": ["credit-card", "credentials"]}]});
        let policies = parse(&v, &|id| is_built_in(id)).unwrap().unwrap();
        Dlp::compile(&policies, &[]).unwrap().response.unwrap()
    }

    fn collect(findings: &Arc<Mutex<Findings>>) -> Box<dyn FnMut(Findings)> {
        let f = Arc::clone(findings);
        Box::new(move |found| f.lock().unwrap().merge(found))
    }

    fn delta(text: &str) -> String {
        format!("data: {}\n\n", serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
    }

    fn content_of(stream: &str) -> String {
        stream
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }

    /// A card number split across three events, the stream cut into every chunk size: the client
    /// never sees a digit of it, and the text around it arrives intact.
    #[test]
    fn a_card_straddling_events_is_masked_in_every_split() {
        let stream =
            [delta("Your card is 4111 11"), delta("11 1111 "), delta("1111, thanks."), "data: [DONE]\n\n".into()]
                .concat();
        for size in 1..=stream.len() {
            let findings = Arc::new(Mutex::new(Findings::default()));
            let mut s = SseScanner::new(side("REDACT"), collect(&findings));
            let mut out = Vec::new();
            for piece in stream.as_bytes().chunks(size) {
                out.extend_from_slice(&s.pass(Bytes::copy_from_slice(piece)));
            }
            out.extend_from_slice(&s.rest());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(content_of(&out), "Your card is [REDACTED:credit_card], thanks.", "split {size}");
            assert!(out.ends_with("data: [DONE]\n\n"), "split {size}");
            assert_eq!(findings.lock().unwrap().findings.len(), 1, "split {size}");
        }
    }

    /// Events with nothing that could grow into a match go out at once.
    #[test]
    fn events_wait_only_while_a_match_could_still_form() {
        let mut s = SseScanner::new(side("REDACT"), Box::new(|_| {}));
        let first = s.pass(Bytes::from(delta("Hello! ")));
        assert_eq!(content_of(std::str::from_utf8(&first).unwrap()), "Hello! ");
        let held = s.pass(Bytes::from(delta("number 4111")));
        assert!(held.is_empty(), "a digit run that may become a card waits");
        let next = s.pass(Bytes::from(delta(" is not a card. ")));
        assert_eq!(content_of(std::str::from_utf8(&next).unwrap()), "number 4111 is not a card. ");
    }

    /// FLAG passes every chunk through untouched and still records the finding.
    #[test]
    fn flag_never_holds_back() {
        let findings = Arc::new(Mutex::new(Findings::default()));
        let mut s = SseScanner::new(side("FLAG"), collect(&findings));
        let a = Bytes::from(delta("card 4111 1111 "));
        assert_eq!(s.pass(a.clone()), a);
        let b = Bytes::from(delta("1111 1111 done"));
        assert_eq!(s.pass(b.clone()), b);
        assert!(s.rest().is_empty());
        assert_eq!(findings.lock().unwrap().action, Some(crate::policy::dlp::Action::Flag));
    }
}
