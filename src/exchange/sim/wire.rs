//! WebSocket frames as wire bytes.
//!
//! Server frames are unmasked, so a frame's bytes are the same for every connection: each data
//! frame is encoded once and the same bytes are written to every subscriber. That is what lets
//! `--rate max` outrun the client instead of the sim re-encoding per connection.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use super::faults::Violation;
use super::generator::Header;

/// A depth event as one stream shows it, encoded once and shared by every subscriber.
#[derive(Debug)]
pub(crate) struct DataFrame {
    /// The whole frame: header and text payload.
    pub wire: Vec<u8>,
    /// Where the exchange payload (the `data` JSON) sits in `wire`.
    pub payload: Range<usize>,
    pub stream: Arc<str>,
    pub symbol: Arc<str>,
    pub header: Header,
    /// When a recorder received it (the tap's frames), for the delivery latency.
    pub received: Option<Instant>,
}

impl DataFrame {
    /// Frames `payload` for `stream`, inside the `{"stream":…,"data":…}` envelope when `combined`.
    pub(crate) fn new(
        stream: &Arc<str>,
        combined: bool,
        symbol: &Arc<str>,
        header: Header,
        payload: &[u8],
    ) -> DataFrame {
        const DATA: &[u8] = b"\",\"data\":";
        let envelope = if combined {
            b"{\"stream\":\"".len() + stream.len() + DATA.len() + 1
        } else {
            0
        };
        let mut wire = Vec::with_capacity(payload.len() + envelope + 10);
        push_header(
            &mut wire,
            OpCode::Data(Data::Text),
            payload.len() + envelope,
        );
        if combined {
            wire.extend_from_slice(b"{\"stream\":\"");
            wire.extend_from_slice(stream.as_bytes());
            wire.extend_from_slice(DATA);
        }
        let start = wire.len();
        wire.extend_from_slice(payload);
        let payload = start..wire.len();
        if combined {
            wire.push(b'}');
        }
        DataFrame {
            wire,
            payload,
            stream: Arc::clone(stream),
            symbol: Arc::clone(symbol),
            header,
            received: None,
        }
    }

    /// Frames `text`, a whole frame as the exchange sent it (a combined frame's envelope and
    /// all), byte for byte; its `data` lies at `payload` within it.
    pub(crate) fn whole(
        stream: &Arc<str>,
        symbol: &Arc<str>,
        header: Header,
        text: &[u8],
        payload: Range<usize>,
    ) -> DataFrame {
        let mut wire = Vec::with_capacity(text.len() + 10);
        push_header(&mut wire, OpCode::Data(Data::Text), text.len());
        let start = wire.len();
        wire.extend_from_slice(text);
        DataFrame {
            wire,
            payload: start + payload.start..start + payload.end,
            stream: Arc::clone(stream),
            symbol: Arc::clone(symbol),
            header,
            received: None,
        }
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.wire[self.payload.clone()]
    }
}

fn push_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    FrameHeader {
        opcode,
        ..FrameHeader::default()
    }
    .format(len as u64, out)
    .expect("writing to a Vec cannot fail");
}

/// Appends a whole frame; for control and junk frames, which are not shared.
fn push_frame(out: &mut Vec<u8>, frame: Frame) {
    frame.format(out).expect("writing to a Vec cannot fail");
}

pub(crate) fn push_text(out: &mut Vec<u8>, text: &str) {
    push_header(out, OpCode::Data(Data::Text), text.len());
    out.extend_from_slice(text.as_bytes());
}

pub(crate) fn push_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    push_header(out, OpCode::Data(Data::Binary), bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a frame that breaks `violation`'s rule. Its payload is a harmless `{}` (or the code of
/// a Close), so the rule broken is the only thing wrong with it.
pub(crate) fn push_violation(out: &mut Vec<u8>, violation: Violation) {
    /// Not UTF-8: a lone continuation byte and a byte that never occurs in UTF-8.
    const NOT_UTF8: &[u8] = &[b'{', 0x80, 0xff, b'}'];
    /// "No status received": reserved for APIs, never sent in a Close frame (RFC 6455 7.4.1).
    const NO_STATUS: [u8; 2] = 1005u16.to_be_bytes();
    let text = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let (header, payload): (FrameHeader, &[u8]) = match violation {
        Violation::Utf8 => (text, NOT_UTF8),
        // Opcode 3 is the first reserved data opcode.
        Violation::Opcode => (
            FrameHeader {
                opcode: OpCode::Data(Data::Reserved(3)),
                ..text
            },
            b"{}",
        ),
        // An all-zero key leaves the payload as it is: only the mask bit is wrong.
        Violation::Masked => (
            FrameHeader {
                mask: Some([0; 4]),
                ..text
            },
            b"{}",
        ),
        Violation::Rsv => (FrameHeader { rsv1: true, ..text }, b"{}"),
        Violation::CloseCode => (
            FrameHeader {
                opcode: OpCode::Control(Control::Close),
                ..text
            },
            &NO_STATUS,
        ),
    };
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

pub(crate) fn push_ping(out: &mut Vec<u8>, payload: &[u8]) {
    push_frame(out, Frame::ping(payload.to_vec()));
}

pub(crate) fn push_pong(out: &mut Vec<u8>, payload: &[u8]) {
    push_frame(out, Frame::pong(payload.to_vec()));
}

pub(crate) fn push_close(out: &mut Vec<u8>, code: CloseCode, reason: &'static str) {
    push_frame(
        out,
        Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            first: 2,
            last: 3,
            prev: 1,
            event_ms: 4,
            trade_ms: 4,
        }
    }

    #[test]
    fn combined_frames_wrap_the_payload() {
        let stream: Arc<str> = "ethusdt@depth".into();
        let symbol: Arc<str> = "ETHUSDT".into();
        let f = DataFrame::new(&stream, true, &symbol, header(), b"{\"a\":1}");
        let text = r#"{"stream":"ethusdt@depth","data":{"a":1}}"#;
        assert_eq!(f.wire[0], 0x81, "final text frame");
        assert_eq!(usize::from(f.wire[1]), text.len(), "unmasked, short length");
        assert_eq!(&f.wire[2..], text.as_bytes());
        assert_eq!(f.payload(), b"{\"a\":1}");
        let raw = DataFrame::new(&stream, false, &symbol, header(), b"{\"a\":1}");
        assert_eq!(&raw.wire[2..], b"{\"a\":1}");
        assert_eq!(raw.payload(), b"{\"a\":1}");
    }

    #[test]
    fn long_frames_use_extended_lengths() {
        let mut out = Vec::new();
        push_text(&mut out, &"x".repeat(70_000));
        assert_eq!(&out[..2], [0x81, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
        assert_eq!(out.len(), 10 + 70_000);
    }
}
