//! Inputs found by the fuzz targets in `fuzz/` (see `fuzz/README.md`),
//! kept as regression tests with the bytes inline, plus the allocation
//! bound checks the fuzzing brief asked for. Each test says what broke.

use super::handshake::{replies, start, FLAGS};
use super::Cat;
use crate::nbd::proto::consts::*;
use crate::nbd::proto::{HandshakeError, Negotiator, NegotiatorConfig, Outcome};

/// nbd_handshake crash-ab0bd6c7: config byte 0xb9 = max_option_buffer 1.
/// A non-fixed-newstyle client sends `NBD_OPT_EXPORT_NAME "disk"`; its
/// 4-byte name exceeded the 1-byte buffer so the server discarded it and
/// queued an `NBD_REP_ERR_TOO_BIG` option reply. EXPORT_NAME has no option
/// reply (the client reads size+flags), so those bytes corrupted the
/// stream; the server must drop the client instead.
#[test]
fn export_name_over_small_buffer_drops_without_option_reply() {
    let input: &[u8] = &[
        0x00, 0x00, 0x00, 0x03, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x03, 0x64, 0x69, 0x73, 0x6b,
    ];
    let mut n = Negotiator::new(NegotiatorConfig {
        max_option_buffer: 1,
        ..NegotiatorConfig::default()
    });
    n.advance_output(GREETING_LEN);
    let (used, o) = n.feed(input, &Cat);
    assert_eq!(used, 20, "header consumed, name left unread");
    assert_eq!(
        o,
        Some(Outcome::Failed(HandshakeError::ExportNameTooLong(3)))
    );
    assert!(n.output().is_empty(), "no option reply to EXPORT_NAME");
}

/// An option header claiming (almost) 4 GiB must not make the server
/// allocate anything near it: it is refused at the header, before any
/// payload buffer exists.
#[test]
fn four_gib_option_length_allocates_nothing() {
    for option in [
        NBD_OPT_GO,
        NBD_OPT_INFO,
        NBD_OPT_SET_META_CONTEXT,
        NBD_OPT_LIST_META_CONTEXT,
        NBD_OPT_EXPORT_NAME,
        NBD_OPT_LIST,
        0xdead_beef,
    ] {
        let mut input = start(FLAGS);
        input.extend(NBD_OPTS_MAGIC.to_be_bytes());
        input.extend(option.to_be_bytes());
        input.extend(u32::MAX.to_be_bytes());
        input.extend([0u8; 64]); // a little of the claimed payload
        let mut n = Negotiator::new(NegotiatorConfig::default());
        let (used, o) = n.feed(&input, &Cat);
        assert_eq!(used, 20);
        assert!(matches!(o, Some(Outcome::Failed(_))), "{option}: {o:?}");
        assert_eq!(n.payload.capacity(), 0, "option {option}");
    }
}

/// Lengths just under the 32 MiB drop limit are accepted but must be
/// streamed: the payload buffer never exceeds `max_option_buffer`, and
/// the first allocation never trusts the claim.
#[test]
fn large_claimed_lengths_are_streamed_not_buffered() {
    for (option, len) in [
        (NBD_OPT_GO, NBD_MAX_PAYLOAD),
        (NBD_OPT_SET_META_CONTEXT, NBD_MAX_PAYLOAD),
        (NBD_OPT_INFO, 64 * 1024), // exactly the buffer: buffered, grows as bytes arrive
        (NBD_OPT_STRUCTURED_REPLY, NBD_MAX_PAYLOAD),
    ] {
        let mut input = start(FLAGS);
        input.extend(super::handshake::opt(NBD_OPT_STRUCTURED_REPLY, &[]));
        input.extend(NBD_OPTS_MAGIC.to_be_bytes());
        input.extend(option.to_be_bytes());
        input.extend(len.to_be_bytes());
        let mut n = Negotiator::new(NegotiatorConfig::default());
        n.advance_output(GREETING_LEN);
        assert_eq!(n.feed(&input, &Cat), (input.len(), None));
        assert!(n.payload.capacity() <= NBD_MAX_STRING_SIZE, "{option}");
        let chunk = vec![0u8; 4096];
        for _ in 0..8 {
            assert_eq!(n.feed(&chunk, &Cat), (chunk.len(), None));
            assert!(n.payload.capacity() <= 64 * 1024, "{option}");
        }
        // Still negotiating: only the STRUCTURED_REPLY ack so far.
        assert_eq!(replies(n.output()).len(), 1);
    }
}
