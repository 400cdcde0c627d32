//! AWS event-stream framing (Bedrock streaming): each frame is a prelude (total length, headers
//! length, CRC), headers, a payload and a CRC. Frames are split out as bytes arrive; the
//! `:event-type` (or `:exception-type`) header names the payload.

/// One frame: its event type and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `:event-type`, or `:exception-type` for an error frame.
    pub event: String,
    /// Whether it is an exception (an error from the service).
    pub exception: bool,
    /// The payload (JSON).
    pub payload: Vec<u8>,
}

/// Largest frame accepted (AWS frames are at most 16 MiB).
const MAX_FRAME: usize = 16 << 20;

/// Splits frames out of the bytes fed so far.
#[derive(Debug, Default)]
pub struct FrameParser {
    buf: Vec<u8>,
}

impl FrameParser {
    /// Adds bytes; returns the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(total) = total_len(&self.buf) {
            if !(16..=MAX_FRAME).contains(&total) {
                return Err(format!("an event-stream frame of {total} bytes"));
            }
            if self.buf.len() < total {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..total).collect();
            if let Some(f) = parse(&frame) {
                out.push(f);
            }
        }
        Ok(out)
    }
}

/// The total length in a frame's prelude, once the prelude is there.
#[must_use]
pub fn total_len(buf: &[u8]) -> Option<usize> {
    let prelude: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prelude)).ok()
}

/// Parses one whole frame.
#[must_use]
pub fn parse(frame: &[u8]) -> Option<Frame> {
    let headers_len = usize::try_from(u32::from_be_bytes(frame.get(4..8)?.try_into().ok()?)).ok()?;
    let headers = frame.get(12..12 + headers_len)?;
    let payload = frame.get(12 + headers_len..frame.len().checked_sub(4)?)?.to_vec();
    let mut event = String::new();
    let mut exception = false;
    let mut i = 0;
    while i < headers.len() {
        let name_len = usize::from(*headers.get(i)?);
        let name = std::str::from_utf8(headers.get(i + 1..i + 1 + name_len)?).ok()?;
        i += 1 + name_len;
        let kind = *headers.get(i)?;
        i += 1;
        let value_len = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let n = usize::from(u16::from_be_bytes(headers.get(i..i + 2)?.try_into().ok()?));
                i += 2;
                n
            }
            _ => return None,
        };
        let value = headers.get(i..i + value_len)?;
        i += value_len;
        if kind == 7 {
            match name {
                ":event-type" => event = String::from_utf8_lossy(value).into_owned(),
                ":exception-type" => {
                    event = String::from_utf8_lossy(value).into_owned();
                    exception = true;
                }
                _ => {}
            }
        }
    }
    Some(Frame { event, exception, payload })
}

/// Builds a frame (for tests and mocks): `:event-type`, `:content-type` and
/// `:message-type: event` headers, CRCs left zero (Torii does not check them).
#[must_use]
pub fn build(event: &str, payload: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in [(":event-type", event), (":content-type", "application/json"), (":message-type", "event")] {
        headers.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        headers.extend_from_slice(name.as_bytes());
        headers.push(7);
        headers.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut f = Vec::with_capacity(total);
    f.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    f.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(u32::MAX).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&headers);
    f.extend_from_slice(payload);
    f.extend_from_slice(&[0; 4]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_in_every_split() {
        let mut stream = build("messageStart", br#"{"role":"assistant"}"#);
        stream.extend(build("contentBlockDelta", br#"{"delta":{"text":"Hi"},"contentBlockIndex":0}"#));
        for size in 1..stream.len() {
            let mut p = FrameParser::default();
            let frames: Vec<Frame> = stream.chunks(size).flat_map(|c| p.feed(c).unwrap()).collect();
            assert_eq!(frames.len(), 2, "pieces of {size}");
            assert_eq!(frames[0].event, "messageStart");
            assert_eq!(frames[1].payload, br#"{"delta":{"text":"Hi"},"contentBlockIndex":0}"#);
        }
        assert!(FrameParser::default().feed(&[0, 0, 0, 3, 0, 0, 0, 0]).is_err(), "a nonsense length");
    }
}
