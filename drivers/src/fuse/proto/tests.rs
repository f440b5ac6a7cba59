//! Codec tests with byte layouts written out by hand from the kernel's uapi.

use super::consts::*;
use super::*;

fn header(opcode: u32, unique: u64, total: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&total.to_ne_bytes());
    b.extend_from_slice(&opcode.to_ne_bytes());
    b.extend_from_slice(&unique.to_ne_bytes());
    b.extend_from_slice(&1u64.to_ne_bytes()); // nodeid
    b.extend_from_slice(&1000u32.to_ne_bytes()); // uid
    b.extend_from_slice(&1001u32.to_ne_bytes()); // gid
    b.extend_from_slice(&42u32.to_ne_bytes()); // pid
    b.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    b
}

#[test]
fn header_round_trip() {
    let b = header(FUSE_READ, 77, 80);
    let h = parse_header(&b).unwrap();
    assert_eq!(h.len, 80);
    assert_eq!(h.opcode, FUSE_READ);
    assert_eq!(h.unique, 77);
    assert_eq!((h.uid, h.gid, h.pid), (1000, 1001, 42));
    assert_eq!(parse_header(&b[..39]), Err(ParseError::ShortHeader(39)));
}

#[test]
fn read_write_and_fallocate_args() {
    let mut a = Vec::new();
    a.extend_from_slice(&9u64.to_ne_bytes()); // fh
    a.extend_from_slice(&4096u64.to_ne_bytes()); // offset
    a.extend_from_slice(&512u32.to_ne_bytes()); // size
    a.extend_from_slice(&[0u8; 20]);
    assert_eq!(
        parse_operation(FUSE_READ, &a).unwrap(),
        Operation::Read {
            offset: 4096,
            size: 512
        }
    );
    assert_eq!(
        parse_operation(FUSE_WRITE, &a).unwrap(),
        Operation::Write {
            offset: 4096,
            size: 512
        }
    );
    assert!(matches!(
        parse_operation(FUSE_WRITE, &a[..39]),
        Err(ParseError::ShortArgs { want: 40, .. })
    ));
    let mut f = Vec::new();
    f.extend_from_slice(&0u64.to_ne_bytes());
    f.extend_from_slice(&8192u64.to_ne_bytes());
    f.extend_from_slice(&4096u64.to_ne_bytes());
    f.extend_from_slice(&3u32.to_ne_bytes());
    f.extend_from_slice(&0u32.to_ne_bytes());
    assert_eq!(
        parse_operation(FUSE_FALLOCATE, &f).unwrap(),
        Operation::Fallocate {
            offset: 8192,
            length: 4096,
            mode: 3
        }
    );
}

#[test]
fn setattr_args() {
    let mut a = vec![0u8; 88];
    a[0..4].copy_from_slice(&(FATTR_SIZE | FATTR_MODE).to_ne_bytes());
    a[16..24].copy_from_slice(&12345u64.to_ne_bytes());
    a[68..72].copy_from_slice(&0o100644u32.to_ne_bytes());
    a[76..80].copy_from_slice(&7u32.to_ne_bytes());
    a[80..84].copy_from_slice(&8u32.to_ne_bytes());
    let Operation::SetAttr(s) = parse_operation(FUSE_SETATTR, &a).unwrap() else {
        panic!("not a setattr");
    };
    assert_eq!(s.valid, FATTR_SIZE | FATTR_MODE);
    assert_eq!((s.size, s.mode, s.uid, s.gid), (12345, 0o100644, 7, 8));
    assert!(parse_operation(FUSE_SETATTR, &a[..80]).is_err());
}

#[test]
fn unknown_opcodes_are_unsupported() {
    assert_eq!(
        parse_operation(9999, &[]).unwrap(),
        Operation::Unsupported(9999)
    );
    assert_eq!(
        parse_operation(FUSE_INIT, &[0; 64]).unwrap(),
        Operation::Unsupported(FUSE_INIT)
    );
}

#[test]
fn reply_layouts() {
    let a = Attr {
        ino: 1,
        size: 1 << 20,
        blocks: 2048,
        time: 5,
        mode: 0o100600,
        nlink: 1,
        uid: 0,
        gid: 0,
        blksize: 512,
    };
    let Reply::Send { error, body } = Reply::attr(&a, 1) else {
        panic!()
    };
    assert_eq!(error, 0);
    let b = body.small();
    assert_eq!(b.len(), 104);
    assert_eq!(&b[24..32], &(1u64 << 20).to_ne_bytes());
    assert_eq!(&b[76..80], &0o100600u32.to_ne_bytes());
    assert_eq!(&b[96..100], &512u32.to_ne_bytes());
    let Reply::Send { body, .. } = Reply::statfs_default() else {
        panic!()
    };
    assert_eq!(body.len(), 80);
    let Reply::Send { error, body } = Reply::error(libc::ENOENT) else {
        panic!()
    };
    assert_eq!((error, body.len()), (-libc::ENOENT, 0));
    let h = out_header(99, -2, 8);
    assert_eq!(&h[0..4], &24u32.to_ne_bytes());
    assert_eq!(&h[4..8], &(-2i32).to_ne_bytes());
    assert_eq!(&h[8..16], &99u64.to_ne_bytes());
}
