//! The handshake of a server that requires TLS: before `NBD_OPT_STARTTLS`,
//! at the upgrade, and after it.

use super::handshake::{info_payload, negotiated, opt, replies, start, FLAGS};
use super::Cat;
use crate::nbd::proto::consts::*;
use crate::nbd::proto::{HandshakeError, Negotiator, NegotiatorConfig, Outcome};

fn tls_negotiator() -> Negotiator {
    let mut n = Negotiator::new(NegotiatorConfig {
        tls: true,
        ..NegotiatorConfig::default()
    });
    n.advance_output(GREETING_LEN);
    n
}

fn reply_types(n: &mut Negotiator) -> Vec<(u32, u32)> {
    let out = n.output().to_vec();
    n.advance_output(out.len());
    replies(&out).into_iter().map(|(o, t, _)| (o, t)).collect()
}

#[test]
fn options_before_tls_are_refused_with_tls_reqd() {
    let mut n = tls_negotiator();
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_LIST, &[]));
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(NBD_OPT_GO, &info_payload("disk", &[])));
    input.extend(opt(NBD_OPT_INFO, &info_payload("disk", &[])));
    input.extend(opt(0x4242, b"unknown option payload"));
    let (used, o) = n.feed(&input, &Cat);
    assert_eq!(o, None);
    assert_eq!(used, input.len());
    assert_eq!(
        reply_types(&mut n),
        vec![
            (NBD_OPT_LIST, NBD_REP_ERR_TLS_REQD),
            (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_TLS_REQD),
            (NBD_OPT_GO, NBD_REP_ERR_TLS_REQD),
            (NBD_OPT_INFO, NBD_REP_ERR_TLS_REQD),
            (0x4242, NBD_REP_ERR_TLS_REQD),
        ]
    );
}

#[test]
fn export_name_before_tls_drops_the_client() {
    let mut n = tls_negotiator();
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_EXPORT_NAME, b"disk"));
    let (_, o) = n.feed(&input, &Cat);
    assert_eq!(
        o,
        Some(Outcome::Failed(HandshakeError::TlsRequired(
            NBD_OPT_EXPORT_NAME
        )))
    );
    assert!(n.output().is_empty(), "EXPORT_NAME has no error reply");
}

#[test]
fn abort_before_tls_gets_tls_reqd() {
    let mut n = tls_negotiator();
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_ABORT, &[]));
    let (_, o) = n.feed(&input, &Cat);
    assert_eq!(o, Some(Outcome::Aborted));
    assert_eq!(
        reply_types(&mut n),
        vec![(NBD_OPT_ABORT, NBD_REP_ERR_TLS_REQD)]
    );
}

#[test]
fn starttls_with_payload_is_refused_then_dropped() {
    let mut n = tls_negotiator();
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_STARTTLS, b"xyz"));
    // Split inside the payload: the reply waits for the whole payload.
    let (used, o) = n.feed(&input[..input.len() - 1], &Cat);
    assert_eq!((used, o), (input.len() - 1, None));
    assert!(n.output().is_empty());
    let (_, o) = n.feed(&input[input.len() - 1..], &Cat);
    assert_eq!(o, Some(Outcome::Failed(HandshakeError::StartTlsPayload)));
    assert_eq!(
        reply_types(&mut n),
        vec![(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID)]
    );
}

#[test]
fn starttls_stops_at_the_option_then_serves_as_plaintext() {
    let mut n = tls_negotiator();
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_LIST, &[]));
    input.extend(opt(NBD_OPT_STARTTLS, &[]));
    let tls_records = b"\x16\x03\x01 not parsed by the negotiator";
    input.extend_from_slice(tls_records);
    let (used, o) = n.feed(&input, &Cat);
    assert_eq!(o, Some(Outcome::StartTls));
    assert_eq!(used, input.len() - tls_records.len(), "TLS bytes are left");
    assert_eq!(
        reply_types(&mut n),
        vec![
            (NBD_OPT_LIST, NBD_REP_ERR_TLS_REQD),
            (NBD_OPT_STARTTLS, NBD_REP_ACK)
        ]
    );
    // Nothing is consumed until the caller has done the TLS handshake.
    assert_eq!(n.feed(&opt(NBD_OPT_LIST, &[]), &Cat), (0, None));
    n.tls_started();

    let mut after = opt(NBD_OPT_STARTTLS, &[]);
    after.extend(opt(NBD_OPT_LIST, &[]));
    after.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    after.extend(opt(
        NBD_OPT_GO,
        &info_payload("disk", &[NBD_INFO_BLOCK_SIZE]),
    ));
    let (used, o) = n.feed(&after, &Cat);
    assert_eq!(used, after.len());
    let neg = negotiated(o);
    assert!(neg.structured);
    assert_eq!(neg.export_name, "disk");
    let r: Vec<(u32, u32)> = reply_types(&mut n);
    assert_eq!(r[0], (NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID), "{r:?}");
    assert!(r.contains(&(NBD_OPT_LIST, NBD_REP_SERVER)), "{r:?}");
    assert_eq!(r.last(), Some(&(NBD_OPT_GO, NBD_REP_ACK)));
}

#[test]
fn a_plaintext_server_refuses_starttls_by_policy() {
    let mut n = Negotiator::new(NegotiatorConfig::default());
    n.advance_output(GREETING_LEN);
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_STARTTLS, &[]));
    let (_, o) = n.feed(&input, &Cat);
    assert_eq!(o, None);
    assert_eq!(
        reply_types(&mut n),
        vec![(NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY)]
    );
}

#[test]
fn old_style_client_cannot_get_tls() {
    let mut n = tls_negotiator();
    let mut input = start(NBD_FLAG_C_NO_ZEROES);
    input.extend(opt(NBD_OPT_STARTTLS, &[]));
    let (_, o) = n.feed(&input, &Cat);
    assert!(matches!(o, Some(Outcome::Failed(_))), "{o:?}");
}
