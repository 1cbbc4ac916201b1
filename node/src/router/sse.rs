//! Server-sent event framing for the router's stream failover: bytes from
//! an upstream are cut into whole events (a block of lines ended by a blank
//! line), so that only whole events reach the client, and the `id:` of the
//! last one passed is where a resumed stream starts (`Last-Event-Id`).

/// Largest event the router passes on; a longer one ends the upstream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Cuts a byte stream into whole events.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// The `id` of the last whole event that carried one.
    last_id: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event longer than {MAX_EVENT_BYTES} bytes")]
pub struct Oversized;

impl Framer {
    /// A framer resuming after `last_id`.
    pub fn new(last_id: Option<String>) -> Self {
        Framer {
            buf: Vec::new(),
            last_id,
        }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Takes a chunk from upstream; returns the whole events it completed
    /// (each with its blank line), to pass on in order. A partial event
    /// waits for the next chunk and is dropped if the upstream ends.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Oversized> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end).collect();
            if let Some(id) = event_id(&event) {
                self.last_id = Some(id);
            }
            out.extend_from_slice(&event);
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            self.buf.clear();
            return Err(Oversized);
        }
        Ok(out)
    }
}

/// The length of the first whole event in `buf` (through its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The value of the event's last `id:` field, if any.
fn event_id(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.strip_prefix(' ').unwrap_or(v).trim_end().to_owned())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_events_pass_and_the_last_id_is_kept() {
        let mut f = Framer::new(None);
        assert_eq!(
            f.push(b": keep-alive\n\nid: t1\nevent: po").unwrap(),
            b": keep-alive\n\n"
        );
        assert_eq!(f.last_id(), None);
        let out = f.push(b"st\ndata: {}\n\nid: t2\ndata: x\n").unwrap();
        assert_eq!(out, b"id: t1\nevent: post\ndata: {}\n\n");
        assert_eq!(f.last_id(), Some("t1"));
        // The upstream dies here: t2 was never whole, so the resume point
        // stays t1 and the client never saw half of t2.
        let mut resumed = Framer::new(f.last_id().map(str::to_owned));
        let out = resumed
            .push(b"id: t2\r\ndata: x\r\n\r\nevent: ready\n\n")
            .unwrap();
        assert_eq!(out, b"id: t2\r\ndata: x\r\n\r\nevent: ready\n\n");
        assert_eq!(resumed.last_id(), Some("t2"));
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut f = Framer::new(None);
        let line = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(f.push(&line), Err(Oversized));
    }
}
