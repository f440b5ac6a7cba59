//! The directory codec against well-formed and hostile bytes.

use super::*;

const CS: u64 = 65536;
const LEN: u64 = 1 << 30;

fn entry(name: &str, flags: u32) -> DirEntry {
    DirEntry {
        table_offset: 7 * CS,
        table_size: table_size(LEN, 16, CS) as u32,
        flags,
        granularity_bits: 16,
        name: name.as_bytes().to_vec(),
    }
}

#[test]
fn roundtrip() {
    let entries = vec![entry("b", FLAG_AUTO), entry("a-longer-name", FLAG_IN_USE)];
    let dir = serialise(&entries, CS, LEN).expect("serialise");
    assert_eq!(dir.len() as u64, entry_size(1) + entry_size(13));
    assert_eq!(dir.len() % 8, 0);
    assert_eq!(parse(&dir, 2, CS, LEN), Ok(entries));
}

#[test]
fn counts_and_framing() {
    let dir = serialise(&[entry("b", 0)], CS, LEN).expect("serialise");
    assert_eq!(
        parse(&dir, 2, CS, LEN),
        Err(err("Less bitmaps found than specified in header extension"))
    );
    let two = serialise(&[entry("b", 0), entry("c", 0)], CS, LEN).expect("serialise");
    assert_eq!(
        parse(&two, 1, CS, LEN),
        Err(err("More bitmaps found than specified in header extension"))
    );
    // Cut anywhere: never a panic, always an error.
    for cut in 1..two.len() {
        assert!(parse(&two[..cut], 2, CS, LEN).is_err(), "cut at {cut}");
    }
    // A name running past the directory.
    let mut long = dir.clone();
    long[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    assert_eq!(
        parse(&long, 1, CS, LEN),
        Err(err("Broken bitmap directory"))
    );
    let mut extra = dir.clone();
    extra[20..24].copy_from_slice(&8u32.to_be_bytes());
    extra.extend_from_slice(&[0; 8]);
    assert_eq!(
        parse(&extra, 1, CS, LEN),
        Err(err("Bitmap extra data is not supported"))
    );
    let mut huge_extra = dir;
    huge_extra[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse(&huge_extra, 1, CS, LEN).is_err());
}

#[test]
fn constraints() {
    let bad = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut d = serialise(&[entry("b", 0)], CS, LEN).expect("serialise");
        f(&mut d);
        parse(&d, 1, CS, LEN)
    };
    let refused = Err(err("Bitmap 'b' doesn't satisfy the constraints"));
    assert_eq!(
        bad(&|d| d[0..8].copy_from_slice(&0u64.to_be_bytes())),
        refused
    );
    assert_eq!(
        bad(&|d| d[0..8].copy_from_slice(&(CS + 512).to_be_bytes())),
        refused
    );
    assert_eq!(
        bad(&|d| d[0..8].copy_from_slice(&(1u64 << 60).to_be_bytes())),
        refused
    );
    assert_eq!(
        bad(&|d| d[8..12].copy_from_slice(&0u32.to_be_bytes())),
        refused
    );
    assert_eq!(
        bad(&|d| d[8..12].copy_from_slice(&u32::MAX.to_be_bytes())),
        refused
    );
    assert_eq!(
        bad(&|d| d[12..16].copy_from_slice(&4u32.to_be_bytes())),
        refused
    );
    assert_eq!(bad(&|d| d[16] = 2), refused);
    assert_eq!(bad(&|d| d[17] = 8), refused);
    assert_eq!(bad(&|d| d[17] = 32), refused);
    // Too small a table for the image, unless in use.
    let small = |flags: u32| {
        let mut e = entry("b", flags);
        e.table_size = 1;
        let mut d = serialise(&[entry("b", FLAG_IN_USE)], CS, LEN).expect("serialise");
        d[8..12].copy_from_slice(&e.table_size.to_be_bytes());
        d[12..16].copy_from_slice(&flags.to_be_bytes());
        parse(&d, 1, CS, 1 << 50)
    };
    assert!(small(0).is_err());
    assert!(small(FLAG_IN_USE).is_ok());
    assert!(serialise(&[], CS, LEN).is_err());
    assert_eq!(
        parse(&[], 0, CS, LEN),
        Err(err("Requested bitmap directory size is zero"))
    );
}

#[test]
fn extension() {
    let ext = BitmapsExt {
        nb_bitmaps: 3,
        dir_size: 96,
        dir_offset: 4 * CS,
    };
    assert_eq!(BitmapsExt::parse(&ext.to_bytes(), CS), Ok(ext));
    let with = |f: &dyn Fn(&mut [u8; 24])| {
        let mut b = ext.to_bytes();
        f(&mut b);
        BitmapsExt::parse(&b, CS)
    };
    assert!(with(&|b| b[4] = 1).is_err());
    assert!(with(&|b| b[0..4].copy_from_slice(&0u32.to_be_bytes())).is_err());
    assert!(with(&|b| b[0..4].copy_from_slice(&70000u32.to_be_bytes())).is_err());
    assert!(with(&|b| b[8..16].copy_from_slice(&u64::MAX.to_be_bytes())).is_err());
    assert!(with(&|b| b[16..24].copy_from_slice(&(CS + 8).to_be_bytes())).is_err());
    assert!(BitmapsExt::parse(&[0u8; 23], CS).is_err());
}

#[test]
fn table_entries() {
    let mut raw = Vec::new();
    for v in [0u64, TABLE_ALL_ONES, 5 * CS] {
        raw.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(parse_table(&raw, CS), Ok(vec![0, 1, 5 * CS]));
    for v in [(5 * CS) | 1, 5 * CS + 512, 1 << 60, 2] {
        assert!(parse_table(&v.to_be_bytes(), CS).is_err(), "{v:#x}");
    }
}
