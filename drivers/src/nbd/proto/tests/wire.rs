//! Request parsing/validation and reply encoding tests, byte-exact
//! against the layouts in the NBD spec.

use crate::nbd::proto::consts::*;
use crate::nbd::proto::*;

fn compact(flags: u16, cmd: u16, cookie: u64, off: u64, len: u32) -> Vec<u8> {
    let mut v = NBD_REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend(flags.to_be_bytes());
    v.extend(cmd.to_be_bytes());
    v.extend(cookie.to_be_bytes());
    v.extend(off.to_be_bytes());
    v.extend(len.to_be_bytes());
    v
}

fn extended(flags: u16, cmd: u16, cookie: u64, off: u64, len: u64) -> Vec<u8> {
    let mut v = NBD_EXTENDED_REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend(flags.to_be_bytes());
    v.extend(cmd.to_be_bytes());
    v.extend(cookie.to_be_bytes());
    v.extend(off.to_be_bytes());
    v.extend(len.to_be_bytes());
    v
}

#[test]
fn parse_compact_and_extended() {
    let b = compact(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 7, 4096, 512);
    let want = RequestHeader {
        flags: 1,
        kind: Command::Write,
        cookie: 7,
        offset: 4096,
        length: 512,
    };
    assert_eq!(parse_request(&b, false), Ok(Some((want, 28))));
    for cut in 0..b.len() {
        assert_eq!(parse_request(&b[..cut], false), Ok(None), "cut {cut}");
    }
    let b = extended(0, 99, 1, 2, 1 << 40);
    let h = parse_request(&b, true).unwrap().unwrap();
    assert_eq!(
        (h.0.kind, h.0.length, h.1),
        (Command::Unknown(99), 1 << 40, 32)
    );
    for cut in 0..b.len() {
        assert_eq!(parse_request(&b[..cut], true), Ok(None));
    }
    // Wrong magic for the negotiated mode, or garbage.
    assert_eq!(
        parse_request(&b, false),
        Err(ProtoError::BadMagic(NBD_EXTENDED_REQUEST_MAGIC))
    );
    assert_eq!(
        parse_request(&[0xde, 0xad, 0xbe, 0xef], true),
        Err(ProtoError::BadMagic(0xdeadbeef))
    );
}

fn session(extended: bool) -> Session {
    Session {
        structured: true,
        extended,
        export_size: 1 << 20,
        transmission_flags: NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA
            | NBD_FLAG_SEND_WRITE_ZEROES
            | NBD_FLAG_SEND_DF
            | NBD_FLAG_BLOCK_STATUS_PAYLOAD,
        max_payload: 1 << 16,
        meta_contexts: 2,
    }
}

fn hdr(flags: u16, kind: Command, offset: u64, length: u64) -> RequestHeader {
    RequestHeader {
        flags,
        kind,
        cookie: 9,
        offset,
        length,
    }
}

fn reject(discard_len: u64, error: NbdErrno) -> Result<Disposition, ProtoError> {
    Ok(Disposition::Reject { discard_len, error })
}

#[test]
fn validation() {
    use Command::*;
    let s = session(false);
    let exec = |n| Ok(Disposition::Execute { payload_len: n });
    assert_eq!(
        check_request(&hdr(NBD_CMD_FLAG_FUA, Write, 0, 512), &s),
        exec(512)
    );
    assert_eq!(
        check_request(&hdr(NBD_CMD_FLAG_DF, Read, 0, 512), &s),
        exec(0)
    );
    assert_eq!(
        check_request(&hdr(0, Disc, 5, 5), &s),
        Ok(Disposition::Disconnect)
    );
    // Oversized write: reply EINVAL but report the payload to skip.
    assert_eq!(
        check_request(&hdr(0, Write, 0, u32::MAX.into()), &s),
        reject(u32::MAX.into(), NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0, Read, 0, 1 << 17), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0, Write, 1 << 20, 512), &s),
        reject(512, NbdErrno::NoSpc)
    );
    assert_eq!(
        check_request(&hdr(0, Read, u64::MAX, 512), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0x100, Read, 0, 512), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(NBD_CMD_FLAG_NO_HOLE, WriteZeroes, 0, 1 << 20), &s),
        exec(0)
    );
    assert_eq!(
        check_request(&hdr(NBD_CMD_FLAG_FAST_ZERO, WriteZeroes, 0, 512), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0, Trim, 0, 512), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0, Unknown(42), 0, 512), &s),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(NBD_CMD_FLAG_REQ_ONE, BlockStatus, 0, 1 << 20), &s),
        exec(0)
    );
    let ro = Session {
        transmission_flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY,
        meta_contexts: 0,
        ..s
    };
    assert_eq!(
        check_request(&hdr(0, Write, 0, 512), &ro),
        reject(512, NbdErrno::Perm)
    );
    assert_eq!(
        check_request(&hdr(0, Trim, 0, 512), &ro),
        reject(0, NbdErrno::Perm)
    );
    assert_eq!(
        check_request(&hdr(0, BlockStatus, 0, 512), &ro),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(0, Flush, 0, 0), &ro),
        reject(0, NbdErrno::Inval)
    );
    assert_eq!(check_request(&hdr(0, Cache, 0, 512), &ro), exec(0));
}

#[test]
fn validation_extended() {
    use Command::*;
    let s = session(true);
    let pl = NBD_CMD_FLAG_PAYLOAD_LEN;
    assert_eq!(
        check_request(&hdr(pl, Write, 0, 512), &s),
        Ok(Disposition::Execute { payload_len: 512 })
    );
    // QEMU's client sends extended writes without the flag: the payload
    // is `length` all the same.
    assert_eq!(
        check_request(&hdr(0, Write, 0, 512), &s),
        Ok(Disposition::Execute { payload_len: 512 })
    );
    assert_eq!(
        check_request(&hdr(pl, Write, 0, 1 << 40), &s),
        Err(ProtoError::PayloadTooLarge {
            len: 1 << 40,
            max: 1 << 16
        })
    );
    // Effect lengths may be 64-bit.
    assert_eq!(
        check_request(&hdr(0, WriteZeroes, 0, 1 << 20), &s),
        Ok(Disposition::Execute { payload_len: 0 })
    );
    // Payload on a command without a payload form: consume it, then EINVAL.
    assert_eq!(
        check_request(&hdr(pl, Flush, 0, 16), &s),
        reject(16, NbdErrno::Inval)
    );
    // Block status payload form.
    assert_eq!(
        check_request(&hdr(pl, BlockStatus, 0, 12), &s),
        Ok(Disposition::Execute { payload_len: 12 })
    );
    assert_eq!(
        check_request(&hdr(pl, BlockStatus, 0, 20), &s),
        reject(20, NbdErrno::Inval)
    );
    assert_eq!(
        check_request(&hdr(pl, BlockStatus, 0, 10), &s),
        reject(10, NbdErrno::Inval)
    );
    let mut p = (1u64 << 20).to_be_bytes().to_vec();
    p.extend(0u32.to_be_bytes());
    p.extend(3u32.to_be_bytes());
    let bs = parse_block_status_payload(&p).unwrap();
    assert_eq!(
        (bs.effect_length, bs.ids().collect::<Vec<_>>()),
        (1 << 20, vec![0, 3])
    );
    p.extend(0u32.to_be_bytes());
    assert_eq!(parse_block_status_payload(&p), Err(NbdErrno::Inval));
    assert_eq!(parse_block_status_payload(&p[..8]), Err(NbdErrno::Inval));
    assert_eq!(parse_block_status_payload(&p[..10]), Err(NbdErrno::Inval));
}

const C: u64 = 0x0102_0304_0506_0708;

fn to(mode: ReplyMode) -> ReplyTo {
    ReplyTo {
        mode,
        cookie: C,
        offset: 0x1000,
    }
}

#[test]
fn simple_replies() {
    let mut v = vec![];
    simple_reply(&mut v, C, Some(NbdErrno::Io));
    assert_eq!(
        v,
        [&[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5][..], &C.to_be_bytes()].concat()
    );
    let mut w = vec![];
    reply_ok(&mut w, &to(ReplyMode::Simple));
    read_data_header(&mut w, &to(ReplyMode::Simple), true, 0, 512).unwrap();
    assert_eq!(w.len(), 32);
    assert_eq!(&w[4..8], &[0, 0, 0, 0]);
    assert_eq!(
        chunk_none(&mut w, &to(ReplyMode::Simple)),
        Err(ReplyError::NotStructured)
    );
}

#[test]
fn structured_chunks() {
    let t = to(ReplyMode::Structured);
    let hdr = |flags: u16, kind: u16, len: u32| {
        [
            &0x668e_33efu32.to_be_bytes()[..],
            &flags.to_be_bytes(),
            &kind.to_be_bytes(),
            &C.to_be_bytes(),
            &len.to_be_bytes(),
        ]
        .concat()
    };
    let mut v = vec![];
    reply_ok(&mut v, &t);
    assert_eq!(v, hdr(1, 0, 0));
    let mut v = vec![];
    read_data_header(&mut v, &t, false, 0x2000, 512).unwrap();
    assert_eq!(
        v,
        [hdr(0, 1, 520), 0x2000u64.to_be_bytes().to_vec()].concat()
    );
    let mut v = vec![];
    chunk_offset_hole(&mut v, &t, true, 0x2000, 4096).unwrap();
    assert_eq!(
        v,
        [
            hdr(1, 2, 12),
            0x2000u64.to_be_bytes().to_vec(),
            4096u32.to_be_bytes().to_vec()
        ]
        .concat()
    );
    let mut v = vec![];
    let ex = [
        Extent {
            length: 4096,
            flags: 3,
        },
        Extent {
            length: 512,
            flags: 0,
        },
    ];
    chunk_block_status(&mut v, &t, true, 7, &ex).unwrap();
    let body: Vec<u8> = [7u32, 4096, 3, 512, 0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    assert_eq!(v, [hdr(1, 5, 20), body].concat());
    let big = [Extent {
        length: 1 << 32,
        flags: 0,
    }];
    assert_eq!(
        chunk_block_status(&mut v, &t, true, 0, &big),
        Err(ReplyError::ExtentTooLong)
    );
    assert_eq!(
        chunk_block_status(&mut v, &t, true, 0, &[]),
        Err(ReplyError::NoExtents)
    );
    let mut v = vec![];
    reply_error(&mut v, &t, NbdErrno::NoSpc, "full");
    assert_eq!(
        v,
        [
            hdr(1, 0x8001, 10),
            vec![0, 0, 0, 28, 0, 4],
            b"full".to_vec()
        ]
        .concat()
    );
    let mut v = vec![];
    chunk_error_offset(&mut v, &t, false, NbdErrno::Io, "", 0x3000).unwrap();
    assert_eq!(
        v,
        [
            hdr(0, 0x8002, 14),
            vec![0, 0, 0, 5, 0, 0],
            0x3000u64.to_be_bytes().to_vec()
        ]
        .concat()
    );
    // Messages are truncated to the string limit.
    let mut v = vec![];
    chunk_error(&mut v, &t, true, NbdErrno::Io, &"x".repeat(5000)).unwrap();
    assert_eq!(v.len(), 20 + 6 + NBD_MAX_STRING_SIZE);
}

#[test]
fn extended_chunks() {
    let t = to(ReplyMode::Extended);
    let hdr = |flags: u16, kind: u16, len: u64| {
        [
            &0x6e8a_278cu32.to_be_bytes()[..],
            &flags.to_be_bytes(),
            &kind.to_be_bytes(),
            &C.to_be_bytes(),
            &0x1000u64.to_be_bytes(),
            &len.to_be_bytes(),
        ]
        .concat()
    };
    let mut v = vec![];
    reply_ok(&mut v, &t);
    assert_eq!(v, hdr(1, 0, 0));
    let mut v = vec![];
    let ex = [Extent {
        length: 1 << 33,
        flags: 1,
    }];
    chunk_block_status(&mut v, &t, true, 2, &ex).unwrap();
    let body = [
        2u32.to_be_bytes().to_vec(),
        1u32.to_be_bytes().to_vec(),
        (1u64 << 33).to_be_bytes().to_vec(),
        1u64.to_be_bytes().to_vec(),
    ]
    .concat();
    assert_eq!(v, [hdr(1, 6, 24), body].concat());
    assert_eq!(ReplyMode::new(true, true), ReplyMode::Extended);
}

#[test]
fn errno_mapping() {
    let m = |e| NbdErrno::from_errno(e).to_wire();
    assert_eq!(m(libc::EPERM), NBD_EPERM);
    assert_eq!(m(libc::EROFS), NBD_EPERM);
    assert_eq!(m(-libc::EIO), NBD_EIO);
    assert_eq!(m(libc::ENOMEM), NBD_ENOMEM);
    assert_eq!(m(libc::EDQUOT), NBD_ENOSPC);
    assert_eq!(m(libc::EFBIG), NBD_ENOSPC);
    assert_eq!(m(libc::EOVERFLOW), NBD_EOVERFLOW);
    assert_eq!(m(libc::EOPNOTSUPP), NBD_ENOTSUP);
    assert_eq!(m(libc::ESHUTDOWN), NBD_ESHUTDOWN);
    assert_eq!(m(libc::ENOENT), NBD_EINVAL);
    assert_eq!(m(i32::MIN), NBD_EINVAL);
}

#[test]
fn transmission_flag_helper() {
    let f = transmission_flags(ExportCaps {
        read_only: true,
        trim: true,
        fast_zero: true,
        flush: true,
        ..Default::default()
    });
    assert_eq!(
        f,
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH
    );
    let f = transmission_flags(ExportCaps {
        write_zeroes: true,
        fast_zero: true,
        ..Default::default()
    });
    assert_eq!(
        f,
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO
    );
}
