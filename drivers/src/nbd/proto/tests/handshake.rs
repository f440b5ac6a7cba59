//! Handshake state machine tests: every option, split input, lying lengths.

use super::{disk, Cat};
use crate::nbd::proto::consts::*;
use crate::nbd::proto::{
    HandshakeError, MetaContext, Negotiated, Negotiator, NegotiatorConfig, Outcome,
};

pub(super) const FLAGS: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

pub(super) fn opt(option: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = NBD_OPTS_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub(super) fn name_payload(name: &str) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v
}

pub(super) fn info_payload(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut v = name_payload(name);
    v.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

pub(super) fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut v = name_payload(name);
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&name_payload(q));
    }
    v
}

/// Parsed option replies: (option, type, payload).
pub(super) fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = vec![];
    while b.len() >= 20 {
        assert_eq!(&b[..8], &NBD_REP_MAGIC.to_be_bytes());
        let o = u32::from_be_bytes(b[8..12].try_into().unwrap());
        let t = u32::from_be_bytes(b[12..16].try_into().unwrap());
        let l = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        out.push((o, t, b[20..20 + l].to_vec()));
        b = &b[20 + l..];
    }
    assert!(b.is_empty(), "trailing bytes");
    out
}

/// Run a whole client byte stream; returns (output after greeting,
/// consumed, outcome).
pub(super) fn run(input: &[u8]) -> (Vec<u8>, usize, Option<Outcome>) {
    let mut n = Negotiator::new(NegotiatorConfig::default());
    n.advance_output(GREETING_LEN);
    let (used, outcome) = n.feed(input, &Cat);
    (n.output().to_vec(), used, outcome)
}

pub(super) fn start(flags: u32) -> Vec<u8> {
    flags.to_be_bytes().to_vec()
}

pub(super) fn negotiated(o: Option<Outcome>) -> Negotiated {
    match o {
        Some(Outcome::Negotiated(n)) => *n,
        other => panic!("expected Negotiated, got {other:?}"),
    }
}

fn go_stream() -> Vec<u8> {
    let mut s = start(FLAGS);
    s.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    s.extend(opt(
        NBD_OPT_SET_META_CONTEXT,
        &meta_payload("disk", &["base:allocation", "qemu:dirty-bitmap:b2", "x:y"]),
    ));
    s.extend(opt(
        NBD_OPT_GO,
        &info_payload("disk", &[NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE]),
    ));
    s
}

#[test]
fn greeting_is_exact() {
    let n = Negotiator::new(NegotiatorConfig::default());
    let mut want = b"NBDMAGIC".to_vec();
    want.extend_from_slice(b"IHAVEOPT");
    want.extend_from_slice(&[0, 3]);
    assert_eq!(n.output(), &want[..]);
}

#[test]
fn go_full_negotiation() {
    let input = go_stream();
    let (out, used, outcome) = run(&input);
    assert_eq!(used, input.len());
    let r = replies(&out);
    assert_eq!(r[0], (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, vec![]));
    let mut ctx0 = 0u32.to_be_bytes().to_vec();
    ctx0.extend_from_slice(b"base:allocation");
    let mut ctx3 = 3u32.to_be_bytes().to_vec();
    ctx3.extend_from_slice(b"qemu:dirty-bitmap:b2");
    assert_eq!(r[1], (NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, ctx0));
    assert_eq!(r[2], (NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, ctx3));
    assert_eq!(r[3], (NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, vec![]));
    let mut name = vec![0, 1];
    name.extend_from_slice(b"disk");
    assert_eq!(r[4], (NBD_OPT_GO, NBD_REP_INFO, name));
    let mut desc = vec![0, 2];
    desc.extend_from_slice(b"test disk");
    assert_eq!(r[5], (NBD_OPT_GO, NBD_REP_INFO, desc));
    let bs = [
        &[0u8, 3][..],
        &512u32.to_be_bytes(),
        &4096u32.to_be_bytes(),
        &(32u32 << 20).to_be_bytes(),
    ]
    .concat();
    assert_eq!(r[6], (NBD_OPT_GO, NBD_REP_INFO, bs));
    let flags = disk().transmission_flags & !NBD_FLAG_BLOCK_STATUS_PAYLOAD;
    let exp = [
        &[0u8, 0][..],
        &(1u64 << 20).to_be_bytes(),
        &flags.to_be_bytes(),
    ]
    .concat();
    assert_eq!(r[7], (NBD_OPT_GO, NBD_REP_INFO, exp));
    assert_eq!(r[8], (NBD_OPT_GO, NBD_REP_ACK, vec![]));
    assert_eq!(r.len(), 9);
    let n = negotiated(outcome);
    assert_eq!(n.export_name, "disk");
    assert!(n.structured && !n.extended && n.no_zeroes && n.block_size_acked);
    assert_eq!(n.info.transmission_flags, flags);
    assert_eq!(
        n.meta_contexts,
        vec![
            (0, MetaContext::BaseAllocation),
            (3, MetaContext::DirtyBitmap("b2".into()))
        ]
    );
}

#[test]
fn go_split_at_every_boundary() {
    let input = go_stream();
    let (want_out, _, want) = run(&input);
    for split in 0..=input.len() {
        let mut n = Negotiator::new(NegotiatorConfig::default());
        let (a, o1) = n.feed(&input[..split], &Cat);
        assert_eq!(a, split);
        let (b, o2) = n.feed(&input[split..], &Cat);
        assert_eq!(a + b, input.len());
        assert_eq!(o1.or(o2), want, "split {split}");
        assert_eq!(&n.output()[GREETING_LEN..], &want_out[..]);
    }
    // One byte at a time.
    let mut n = Negotiator::new(NegotiatorConfig::default());
    let mut got = None;
    for byte in &input {
        let (used, o) = n.feed(std::slice::from_ref(byte), &Cat);
        assert_eq!(used, 1);
        got = got.or(o);
    }
    assert_eq!(got, want);
}

#[test]
fn trailing_bytes_after_go_are_left() {
    let mut input = go_stream();
    let len = input.len();
    input.extend_from_slice(&[0x25, 0x60, 0x95, 0x13]);
    let (_, used, o) = run(&input);
    assert_eq!(used, len);
    negotiated(o);
}

#[test]
fn huge_option_length_drops_without_allocating() {
    let mut input = start(FLAGS);
    input.extend(NBD_OPTS_MAGIC.to_be_bytes());
    input.extend(NBD_OPT_GO.to_be_bytes());
    input.extend(u32::MAX.to_be_bytes());
    let mut n = Negotiator::new(NegotiatorConfig::default());
    let (_, o) = n.feed(&input, &Cat);
    assert_eq!(
        o,
        Some(Outcome::Failed(HandshakeError::OptionTooLong {
            option: NBD_OPT_GO,
            len: u32::MAX
        }))
    );
    assert_eq!(n.payload.capacity(), 0);
}

#[test]
fn big_option_is_skipped_then_refused() {
    let len = 16u32 << 20;
    let mut head = start(FLAGS);
    head.extend(NBD_OPTS_MAGIC.to_be_bytes());
    head.extend(NBD_OPT_GO.to_be_bytes());
    head.extend(len.to_be_bytes());
    let mut n = Negotiator::new(NegotiatorConfig::default());
    n.advance_output(GREETING_LEN);
    assert_eq!(n.feed(&head, &Cat), (head.len(), None));
    let chunk = vec![0xAAu8; 1 << 20];
    for _ in 0..16 {
        assert_eq!(n.feed(&chunk, &Cat), (chunk.len(), None));
        assert!(n.payload.capacity() <= NBD_MAX_STRING_SIZE);
    }
    let r = replies(n.output());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, NBD_REP_ERR_TOO_BIG);
    // Still negotiating.
    let (_, o) = n.feed(&opt(NBD_OPT_ABORT, &[]), &Cat);
    assert_eq!(o, Some(Outcome::Aborted));
}

#[test]
fn unknown_option_is_unsupported_and_handshake_continues() {
    let mut input = start(FLAGS);
    input.extend(opt(0x1234, b"whatever"));
    input.extend(opt(NBD_OPT_PEEK_EXPORT, &[]));
    input.extend(opt(NBD_OPT_GO, &info_payload("", &[])));
    let (out, _, o) = run(&input);
    let r = replies(&out);
    assert_eq!((r[0].0, r[0].1), (0x1234, NBD_REP_ERR_UNSUP));
    assert_eq!((r[1].0, r[1].1), (NBD_OPT_PEEK_EXPORT, NBD_REP_ERR_UNSUP));
    let n = negotiated(o);
    assert_eq!(n.export_name, "");
    assert!(!n.structured && !n.block_size_acked);
    // SEND_DF is masked without structured replies.
    assert_eq!(n.info.transmission_flags & NBD_FLAG_SEND_DF, 0);
}

#[test]
fn list_exports() {
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_LIST, &[]));
    input.extend(opt(NBD_OPT_LIST, b"x"));
    let (out, _, o) = run(&input);
    assert_eq!(o, None);
    let r = replies(&out);
    let d = [&4u32.to_be_bytes()[..], b"disk", b"test disk"].concat();
    assert_eq!(r[0], (NBD_OPT_LIST, NBD_REP_SERVER, d));
    assert_eq!(
        r[1],
        (NBD_OPT_LIST, NBD_REP_SERVER, 0u32.to_be_bytes().to_vec())
    );
    assert_eq!(r[2], (NBD_OPT_LIST, NBD_REP_ACK, vec![]));
    assert_eq!((r[3].1, r.len()), (NBD_REP_ERR_INVALID, 4));
}

#[test]
fn info_replies_and_errors() {
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_INFO, &info_payload("nope", &[])));
    input.extend(opt(NBD_OPT_INFO, &info_payload("disk", &[])));
    input.extend(opt(
        NBD_OPT_INFO,
        &info_payload("disk", &[NBD_INFO_BLOCK_SIZE, 99]),
    ));
    let mut bad = info_payload("disk", &[]);
    bad.push(0);
    input.extend(opt(NBD_OPT_INFO, &bad));
    input.extend(opt(NBD_OPT_INFO, &[0, 0, 0, 9, b'd']));
    let (out, _, o) = run(&input);
    assert_eq!(o, None);
    let r: Vec<_> = replies(&out).into_iter().map(|(_, t, _)| t).collect();
    let info = NBD_REP_INFO;
    let want = vec![
        NBD_REP_ERR_UNKNOWN,
        info,
        info,
        info,
        NBD_REP_ERR_BLOCK_SIZE_REQD,
        info,
        info,
        info,
        NBD_REP_ACK,
        NBD_REP_ERR_INVALID,
        NBD_REP_ERR_INVALID,
    ];
    assert_eq!(r, want);
}

#[test]
fn abort_starttls_structured_twice() {
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_STARTTLS, &[]));
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, b"zz"));
    input.extend(opt(NBD_OPT_ABORT, b"ignored"));
    let (out, used, o) = run(&input);
    assert_eq!(o, Some(Outcome::Aborted));
    assert_eq!(used, input.len() - b"ignored".len());
    let r: Vec<_> = replies(&out).into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(
        r,
        vec![
            NBD_REP_ERR_POLICY,
            NBD_REP_ACK,
            NBD_REP_ERR_INVALID,
            NBD_REP_ERR_INVALID,
            NBD_REP_ACK
        ]
    );
}

#[test]
fn extended_headers() {
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_EXTENDED_HEADERS, &[]));
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(NBD_OPT_EXTENDED_HEADERS, &[]));
    input.extend(opt(
        NBD_OPT_SET_META_CONTEXT,
        &meta_payload("disk", &["base:allocation"]),
    ));
    input.extend(opt(
        NBD_OPT_GO,
        &info_payload("disk", &[NBD_INFO_BLOCK_SIZE]),
    ));
    let (out, _, o) = run(&input);
    let r: Vec<_> = replies(&out).into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(
        &r[..3],
        &[
            NBD_REP_ACK,
            NBD_REP_ERR_EXT_HEADER_REQD,
            NBD_REP_ERR_INVALID
        ]
    );
    let n = negotiated(o);
    assert!(n.extended && n.structured);
    assert_ne!(n.info.transmission_flags & NBD_FLAG_BLOCK_STATUS_PAYLOAD, 0);
    assert_ne!(n.info.transmission_flags & NBD_FLAG_SEND_DF, 0);
}

#[test]
fn export_name_replies() {
    for (flags, pad) in [(FLAGS, 0), (NBD_FLAG_C_FIXED_NEWSTYLE, 124), (0, 124)] {
        let mut input = start(flags);
        input.extend(opt(NBD_OPT_EXPORT_NAME, b"disk"));
        let (out, _, o) = run(&input);
        assert_eq!(out.len(), 10 + pad);
        assert_eq!(&out[..8], &(1u64 << 20).to_be_bytes());
        let n = negotiated(o);
        assert_eq!(n.info.transmission_flags & NBD_FLAG_SEND_DF, 0);
    }
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_EXPORT_NAME, b"nope"));
    assert!(matches!(
        run(&input).2,
        Some(Outcome::Failed(HandshakeError::UnknownExport(_)))
    ));
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_EXTENDED_HEADERS, &[]));
    input.extend(opt(NBD_OPT_EXPORT_NAME, b"disk"));
    assert_eq!(
        run(&input).2,
        Some(Outcome::Failed(
            HandshakeError::ExportNameWithExtendedHeaders
        ))
    );
}

#[test]
fn connection_level_failures() {
    let (_, _, o) = run(&start(4));
    assert_eq!(o, Some(Outcome::Failed(HandshakeError::BadClientFlags(4))));
    let mut input = start(0);
    input.extend(opt(NBD_OPT_GO, &info_payload("disk", &[])));
    assert_eq!(
        run(&input).2,
        Some(Outcome::Failed(HandshakeError::NotFixedNewstyle(
            NBD_OPT_GO
        )))
    );
    let mut input = start(FLAGS);
    input.extend([0u8; 16]);
    assert_eq!(
        run(&input).2,
        Some(Outcome::Failed(HandshakeError::BadOptionMagic(0)))
    );
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_EXPORT_NAME, &[b'a'; 4097]));
    assert_eq!(
        run(&input).2,
        Some(Outcome::Failed(HandshakeError::ExportNameTooLong(4097)))
    );
}

#[test]
fn option_count_is_capped() {
    let cfg = NegotiatorConfig {
        max_options: 3,
        ..Default::default()
    };
    let mut n = Negotiator::new(cfg);
    let mut input = start(FLAGS);
    for _ in 0..4 {
        input.extend(opt(NBD_OPT_LIST, &[]));
    }
    let (_, o) = n.feed(&input, &Cat);
    assert_eq!(o, Some(Outcome::Failed(HandshakeError::TooManyOptions(3))));
}
