//! An incremental Server-Sent Events parser: feed bytes as they arrive, take complete events.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` name (empty when the event has none).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Keeps the unfinished tail between feeds.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

/// Largest unfinished event held (a larger one is an error in the stream, not a reason to grow).
const MAX_EVENT: usize = 16 << 20;

impl SseParser {
    /// Adds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = boundary(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            if let Some(e) = parse_event(&raw[..end]) {
                out.push(e);
            }
        }
        if self.buf.len() > MAX_EVENT {
            return Err(format!("an SSE event longer than {MAX_EVENT} bytes"));
        }
        Ok(out)
    }

    /// The last event when the stream ends without a blank line after it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.buf);
        parse_event(&raw)
    }
}

/// Position and length of the first event separator (`\n\n`, `\r\n\r\n` or `\r\r`).
fn boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some((i, 2)),
            b'\r'
                if buf.get(i + 1) == Some(&b'\n')
                    && buf.get(i + 2) == Some(&b'\r')
                    && buf.get(i + 3) == Some(&b'\n') =>
            {
                return Some((i, 4));
            }
            b'\n' if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') => return Some((i, 3)),
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = crate::text::lossy(raw);
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && event.event.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

/// Writes one event.
#[must_use]
pub fn frame(event: Option<&str>, data: &str) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_in_every_split() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        for size in 1..stream.len() {
            let mut p = SseParser::default();
            let mut all = Vec::new();
            for piece in stream.chunks(size) {
                all.extend(p.feed(piece).unwrap());
            }
            assert_eq!(all.len(), 3, "pieces of {size}");
            assert_eq!(all[0], SseEvent { event: "a".into(), data: "{\"x\":1}".into() });
            assert_eq!(all[1].data, "line1\nline2");
            assert_eq!(all[2].data, "[DONE]");
        }
    }
}
