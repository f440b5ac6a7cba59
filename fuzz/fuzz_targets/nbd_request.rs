//! Transmission request parsing and validation.
//!
//! Input layout: byte 0 bit 0 picks compact (28-byte) or extended (32-byte)
//! headers; the next bytes build three `Session`s (via `arbitrary`); the
//! rest is the client's request stream, parsed header by header and
//! skipping each header's payload, as the connection loop does.
//!
//! Invariants: no panic; a parsed header occupies exactly 28/32 bytes; the
//! bytes a `Disposition` says to read or discard always equal what the
//! header puts on the wire (`payload_len`), so framing is never lost;
//! `Execute` only for requests that are in bounds, within the advertised
//! maximum payload and allowed by the flags; `parse_block_status_payload`
//! accepts only well-formed payloads with distinct ids.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use drivers::nbd::proto::consts::*;
use drivers::nbd::proto::{
    check_request, parse_block_status_payload, parse_request, Command, Disposition, ProtoError,
    RequestHeader, Session,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct ArbSession {
    structured: bool,
    export_size: u64,
    transmission_flags: u16,
    max_payload: u32,
    meta_contexts: u8,
}

impl ArbSession {
    /// A session the negotiator could have produced for this header mode.
    fn session(&self, extended: bool) -> Session {
        Session {
            structured: self.structured || extended,
            extended,
            export_size: self.export_size,
            transmission_flags: self.transmission_flags | NBD_FLAG_HAS_FLAGS,
            max_payload: self.max_payload % (NBD_MAX_PAYLOAD + 1),
            meta_contexts: u32::from(self.meta_contexts % 8),
        }
    }
}

/// Payload bytes the header puts on the wire, computed from the spec
/// independently of `RequestHeader::payload_len`.
fn wire_payload(h: &RequestHeader, extended: bool) -> u64 {
    let is_write = h.kind == Command::Write;
    if extended {
        if is_write || h.flags & NBD_CMD_FLAG_PAYLOAD_LEN != 0 {
            h.length
        } else {
            0
        }
    } else if is_write {
        h.length
    } else {
        0
    }
}

fn check_one(h: &RequestHeader, s: &Session, payload: &[u8]) {
    let wire = wire_payload(h, s.extended);
    assert_eq!(h.payload_len(s.extended), wire);
    match check_request(h, s) {
        Ok(Disposition::Disconnect) => assert_eq!(h.kind, Command::Disc),
        Ok(Disposition::Reject {
            discard_len,
            error: _,
        }) => {
            assert_eq!(
                discard_len, wire,
                "reject must skip exactly the wire payload"
            );
            assert_ne!(h.kind, Command::Disc);
        }
        Ok(Disposition::Execute { payload_len }) => {
            assert_eq!(
                payload_len, wire,
                "execute must read exactly the wire payload"
            );
            assert!(!matches!(h.kind, Command::Unknown(_) | Command::Disc));
            if s.extended {
                assert!(payload_len <= u64::from(s.max_payload));
            }
            let tf = s.transmission_flags;
            let ro = tf & NBD_FLAG_READ_ONLY != 0;
            if ro {
                assert!(!matches!(
                    h.kind,
                    Command::Write | Command::Trim | Command::WriteZeroes
                ));
            }
            if matches!(h.kind, Command::Read | Command::Write | Command::Cache) {
                assert!(
                    h.length <= u64::from(s.max_payload),
                    "oversized {:?} executed",
                    h.kind
                );
            }
            if h.flags & NBD_CMD_FLAG_FUA != 0 {
                assert!(tf & NBD_FLAG_SEND_FUA != 0);
            }
            if h.flags & NBD_CMD_FLAG_DF != 0 {
                assert!(h.kind == Command::Read && s.structured && tf & NBD_FLAG_SEND_DF != 0);
            }
            if h.flags & NBD_CMD_FLAG_FAST_ZERO != 0 {
                assert!(h.kind == Command::WriteZeroes && tf & NBD_FLAG_SEND_FAST_ZERO != 0);
            }
            let bs_payload =
                h.kind == Command::BlockStatus && h.flags & NBD_CMD_FLAG_PAYLOAD_LEN != 0;
            if h.kind == Command::BlockStatus {
                assert!(s.structured && s.meta_contexts > 0);
            }
            if bs_payload {
                assert!(s.extended && tf & NBD_FLAG_BLOCK_STATUS_PAYLOAD != 0);
                assert!(payload_len >= 8 && payload_len.is_multiple_of(4));
                assert!(payload_len <= 8 + 4 * u64::from(s.meta_contexts));
                if payload.len() as u64 == payload_len {
                    check_bs_payload(payload);
                }
            } else {
                // In bounds of the export.
                let end = h.offset.checked_add(h.length);
                assert!(
                    end.is_some_and(|e| e <= s.export_size),
                    "out of bounds executed: {h:?} {s:?}"
                );
            }
        }
        Err(ProtoError::PayloadTooLarge { len, max }) => {
            assert!(s.extended);
            assert_eq!(len, wire);
            assert_eq!(max, s.max_payload);
            assert!(len > u64::from(max));
        }
        Err(e) => panic!("unexpected error {e:?} for a parsed header"),
    }
}

fn check_bs_payload(p: &[u8]) {
    match parse_block_status_payload(p) {
        Ok(bs) => {
            assert!(p.len() >= 12 && p.len().is_multiple_of(4));
            assert_eq!(
                bs.effect_length,
                u64::from_be_bytes(p[..8].try_into().unwrap())
            );
            assert_eq!(bs.len(), (p.len() - 8) / 4);
            assert!(!bs.is_empty());
            let ids: Vec<u32> = bs.ids().collect();
            assert_eq!(ids.len(), bs.len());
            for (i, a) in ids.iter().enumerate() {
                assert!(!ids[i + 1..].contains(a), "duplicate id accepted");
                let off = 8 + 4 * i;
                assert_eq!(*a, u32::from_be_bytes(p[off..off + 4].try_into().unwrap()));
            }
        }
        Err(_) => {
            let well_formed = p.len() >= 12 && p.len().is_multiple_of(4) && {
                let ids: Vec<&[u8]> = p[8..].chunks(4).collect();
                (0..ids.len()).all(|i| !ids[i + 1..].contains(&ids[i]))
            };
            assert!(!well_formed, "well-formed payload refused");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let extended = mode & 1 != 0;
    let mut u = Unstructured::new(rest);
    let sessions: Vec<Session> = (0..3)
        .map(|_| ArbSession::arbitrary(&mut u).map(|a| a.session(extended)))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let stream = u.take_rest();

    // The payload parser on its own, on the raw stream.
    check_bs_payload(&stream[..stream.len().min(256)]);

    let mut buf = stream;
    for _ in 0..64 {
        match parse_request(buf, extended) {
            Ok(None) => {
                let need = if extended {
                    EXTENDED_REQUEST_LEN
                } else {
                    REQUEST_LEN
                };
                assert!(buf.len() < need, "complete header reported incomplete");
                break;
            }
            Err(ProtoError::BadMagic(m)) => {
                assert!(buf.len() >= 4);
                assert_eq!(m.to_be_bytes(), buf[..4]);
                break;
            }
            Err(e) => panic!("unexpected parse error {e:?}"),
            Ok(Some((h, used))) => {
                assert_eq!(
                    used,
                    if extended {
                        EXTENDED_REQUEST_LEN
                    } else {
                        REQUEST_LEN
                    }
                );
                assert!(used <= buf.len());
                assert_eq!(h.kind.to_wire(), u16::from_be_bytes([buf[6], buf[7]]));
                assert_eq!(Command::from_wire(h.kind.to_wire()), h.kind);
                let body = &buf[used..];
                let wire = wire_payload(&h, extended);
                let take = usize::try_from(wire).unwrap_or(usize::MAX).min(body.len());
                for s in &sessions {
                    check_one(&h, s, &body[..take]);
                }
                buf = &body[take..];
            }
        }
    }
});
