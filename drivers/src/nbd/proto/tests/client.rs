//! The client's direction against the server's: requests the client
//! encodes parse back on the server side, replies the server encodes parse
//! back on the client side, and the client handshake negotiates with the
//! server's state machine.

use super::{disk, Cat};
use crate::nbd::proto::client::*;
use crate::nbd::proto::consts::*;
use crate::nbd::proto::*;

#[test]
fn requests_round_trip_through_the_server_parser() {
    for (kind, flags, off, len) in [
        (Command::Read, 0, 0, 4096),
        (Command::Write, NBD_CMD_FLAG_FUA, 1 << 40, 65536),
        (
            Command::WriteZeroes,
            NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
            512,
            1 << 30,
        ),
        (
            Command::BlockStatus,
            NBD_CMD_FLAG_REQ_ONE,
            0,
            u64::from(u32::MAX),
        ),
        (Command::Flush, 0, 0, 0),
    ] {
        let mut h = request(kind, flags, off, len);
        h.cookie = 0xdead_beef_0000_0001;
        let mut out = Vec::new();
        encode_request(&mut out, &h);
        assert_eq!(out.len(), REQUEST_LEN);
        let (parsed, used) = parse_request(&out, false).expect("valid").expect("whole");
        assert_eq!((parsed, used), (h, REQUEST_LEN));
    }
}

fn to(cookie: u64) -> ReplyTo {
    ReplyTo {
        mode: ReplyMode::Structured,
        cookie,
        offset: 0,
    }
}

#[test]
fn replies_round_trip_through_the_client_parser() {
    let mut v = Vec::new();
    simple_reply(&mut v, 7, Some(NbdErrno::NoSpc));
    let (h, n) = parse_reply_header(&v, false).expect("ok").expect("whole");
    assert_eq!(
        (h, n),
        (
            ReplyHeader::Simple {
                cookie: 7,
                error: NBD_ENOSPC
            },
            16
        )
    );
    assert_eq!(errno_from_wire(NBD_ENOSPC), libc::ENOSPC);
    // A partial header needs more bytes; a bad magic is fatal.
    assert_eq!(parse_reply_header(&v[..10], false), Ok(None));
    assert!(parse_reply_header(&[0xff; 20], true).is_err());

    let mut v = Vec::new();
    read_data_header(&mut v, &to(9), false, 4096, 512).expect("data");
    let (h, n) = parse_reply_header(&v, true).expect("ok").expect("whole");
    assert_eq!(
        h,
        ReplyHeader::Chunk {
            flags: 0,
            kind: NBD_REPLY_TYPE_OFFSET_DATA,
            cookie: 9,
            length: 520
        }
    );
    assert_eq!(u64::from_be_bytes(v[n..n + 8].try_into().expect("8")), 4096);
    // Structured chunks are refused unless negotiated.
    assert!(parse_reply_header(&v, false).is_err());

    let mut v = Vec::new();
    chunk_offset_hole(&mut v, &to(3), false, 8192, 4096).expect("hole");
    assert_eq!(parse_offset_hole(&v[20..]), Ok((8192, 4096)));

    let mut v = Vec::new();
    chunk_error(&mut v, &to(3), true, NbdErrno::Io, "disk on fire").expect("err");
    let (h, _) = parse_reply_header(&v, true).expect("ok").expect("whole");
    assert!(matches!(
        h,
        ReplyHeader::Chunk {
            flags: NBD_REPLY_FLAG_DONE,
            kind: NBD_REPLY_TYPE_ERROR,
            ..
        }
    ));
    assert_eq!(
        parse_error_chunk(&v[20..]),
        Ok((NBD_EIO, "disk on fire".to_string()))
    );

    let ext = [
        Extent {
            length: 65536,
            flags: 3,
        },
        Extent {
            length: 4096,
            flags: 0,
        },
    ];
    let mut v = Vec::new();
    chunk_block_status(&mut v, &to(4), true, 2, &ext).expect("status");
    assert_eq!(parse_block_status_chunk(&v[20..]), Ok((2, ext.to_vec())));
    assert!(parse_block_status_chunk(&v[20..27]).is_err());
}

/// Runs the client handshake against the server's negotiator in memory.
fn negotiate(export: &str) -> (Result<ServerInfo, ClientHandshakeError>, Option<Negotiated>) {
    negotiate_with(
        NegotiatorConfig::default(),
        ClientHandshake::new(export),
        &mut 0,
    )
}

/// [`negotiate`] with a server configuration and client of the test's
/// choosing; the TLS upgrades both sides agree on are counted in `tls`
/// (in memory, the "TLS" stream is the plaintext one).
fn negotiate_with(
    config: NegotiatorConfig,
    mut client: ClientHandshake,
    tls: &mut u32,
) -> (Result<ServerInfo, ClientHandshakeError>, Option<Negotiated>) {
    let mut server = Negotiator::new(config);
    let mut to_client: Vec<u8> = server.output().to_vec();
    let n = to_client.len();
    server.advance_output(n);
    let mut negotiated = None;
    let mut server_started_tls = false;
    for _ in 0..64 {
        match client.step() {
            Action::Send(b) => {
                let (used, outcome) = server.feed(&b, &Cat);
                assert_eq!(used, b.len());
                match outcome {
                    Some(Outcome::Negotiated(n)) => negotiated = Some(*n),
                    Some(Outcome::StartTls) => server_started_tls = true,
                    _ => {}
                }
                to_client.extend_from_slice(server.output());
                let n = server.output().len();
                server.advance_output(n);
            }
            Action::StartTls => {
                assert!(server_started_tls, "the client upgrades before the server");
                assert!(to_client.is_empty(), "bytes before the TLS stream");
                server.tls_started();
                *tls += 1;
            }
            Action::Recv(n) => {
                assert!(
                    to_client.len() >= n,
                    "client waits for bytes the server never sent"
                );
                let chunk: Vec<u8> = to_client.drain(..n).collect();
                client.input(&chunk);
            }
            Action::Done(r) => return (r, negotiated),
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn client_handshake_negotiates_with_the_server() {
    let (r, n) = negotiate("disk");
    let info = r.expect("negotiated");
    let want = disk();
    assert_eq!(info.size, want.size);
    assert!(info.structured);
    assert_eq!(
        info.transmission_flags & NBD_FLAG_SEND_FUA,
        NBD_FLAG_SEND_FUA
    );
    assert_eq!((info.min_block, info.preferred_block), (512, 4096));
    let n = n.expect("server side done");
    assert!(n.structured && n.block_size_acked);
    // Both contexts were asked for and granted, with the server's ids.
    let ids: Vec<(u32, MetaContext)> = n.meta_contexts.clone();
    assert_eq!(ids.len(), 2);
    let id_of = |m: MetaContext| ids.iter().find(|(_, c)| *c == m).map(|(i, _)| *i);
    assert_eq!(info.base_allocation, id_of(MetaContext::BaseAllocation));
    assert_eq!(info.allocation_depth, id_of(MetaContext::AllocationDepth));
}

#[test]
fn client_handshake_reports_an_unknown_export() {
    let (r, _) = negotiate("nope");
    match r {
        Err(ClientHandshakeError::Refused(m)) => {
            assert!(m.starts_with("Requested export not available"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_handshake_rejects_a_bad_greeting() {
    let mut c = ClientHandshake::new("");
    assert_eq!(c.step(), Action::Recv(GREETING_LEN));
    c.input(&[0u8; GREETING_LEN]);
    assert_eq!(c.step(), Action::Done(Err(ClientHandshakeError::BadMagic)));
}

#[test]
fn client_handshake_upgrades_to_tls_first_when_asked() {
    let tls_server = NegotiatorConfig {
        tls: true,
        ..NegotiatorConfig::default()
    };
    let mut upgrades = 0;
    let (r, n) = negotiate_with(
        tls_server,
        ClientHandshake::new("disk").with_tls(),
        &mut upgrades,
    );
    assert_eq!(upgrades, 1);
    assert_eq!(r.expect("negotiated over TLS").size, disk().size);
    assert!(n.expect("server side done").structured);

    // Without TLS, a server that requires it refuses GO in QEMU's words.
    let (r, _) = negotiate_with(tls_server, ClientHandshake::new("disk"), &mut upgrades);
    match r {
        Err(ClientHandshakeError::Refused(m)) => assert!(
            m.starts_with("TLS negotiation required before option 7 (go)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // A server without TLS refuses STARTTLS; the client does not go on.
    let (r, n) = negotiate_with(
        NegotiatorConfig::default(),
        ClientHandshake::new("disk").with_tls(),
        &mut upgrades,
    );
    assert_eq!(upgrades, 1);
    assert!(n.is_none());
    match r {
        Err(ClientHandshakeError::Refused(m)) => assert!(
            m.starts_with("Denied by server for option 5 (starttls)")
                || m.starts_with("Server don't support STARTTLS option"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
