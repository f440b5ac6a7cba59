//! Rewrites the bitmaps extension and the autoclear bits in the bytes of
//! an image's first cluster (no I/O).
//!
//! Everything else of the header is kept byte for byte: the other
//! extensions in their order, unknown ones included, and the backing file
//! name, which moves when the extension area grows or shrinks (its offset
//! in the header moves with it). Adding the extension puts it first.

use super::directory::BitmapsExt;
use crate::block::qcow2::header::{be32, be64, EXT_BITMAPS};

/// Byte offset of the autoclear features in a version 3 header.
const AUTOCLEAR_AT: usize = 88;

/// Sets the bitmaps extension to `ext` (`None`: removes it) and the
/// autoclear bits to `autoclear` in `cluster` (the whole first cluster of
/// a version 3 image, as [`crate::block::qcow2::Header::parse`] accepted
/// it). Returns how many leading bytes changed and must be written, or
/// `None` when the new header does not fit in the cluster.
pub(crate) fn set_bitmaps_ext(
    cluster: &mut [u8],
    ext: Option<BitmapsExt>,
    autoclear: u64,
) -> Option<usize> {
    if cluster.len() < 104 {
        return None;
    }
    let header_len = be32(cluster, 100) as usize;
    let backing_offset = be64(cluster, 8) as usize;
    let backing_size = be32(cluster, 16) as usize;
    let limit = if backing_offset != 0 {
        backing_offset.min(cluster.len())
    } else {
        cluster.len()
    };
    if header_len > limit {
        return None;
    }
    // The extensions as they are, without the bitmaps one.
    let mut exts: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut at = header_len;
    while at + 8 <= limit {
        let kind = be32(cluster, at);
        let len = be32(cluster, at + 4) as usize;
        at += 8;
        if kind == 0 {
            break;
        }
        let data = cluster.get(at..at.checked_add(len)?)?;
        if kind != EXT_BITMAPS {
            exts.push((kind, data.to_vec()));
        }
        at += len.next_multiple_of(8);
    }
    let old_end = if backing_offset != 0 {
        backing_offset.checked_add(backing_size)?
    } else {
        at.min(cluster.len())
    };
    let name = if backing_offset != 0 {
        cluster.get(backing_offset..old_end)?.to_vec()
    } else {
        Vec::new()
    };
    let mut area = Vec::new();
    if let Some(e) = ext {
        area.extend_from_slice(&EXT_BITMAPS.to_be_bytes());
        area.extend_from_slice(&24u32.to_be_bytes());
        area.extend_from_slice(&e.to_bytes());
    }
    for (kind, data) in &exts {
        area.extend_from_slice(&kind.to_be_bytes());
        area.extend_from_slice(&(data.len() as u32).to_be_bytes());
        area.extend_from_slice(data);
        area.resize(area.len().next_multiple_of(8), 0);
    }
    area.extend_from_slice(&[0u8; 8]);
    let name_at = header_len + area.len();
    let new_end = name_at + name.len();
    if new_end > cluster.len() {
        return None;
    }
    cluster[AUTOCLEAR_AT..AUTOCLEAR_AT + 8].copy_from_slice(&autoclear.to_be_bytes());
    cluster[header_len..name_at].copy_from_slice(&area);
    if backing_offset != 0 {
        cluster[8..16].copy_from_slice(&(name_at as u64).to_be_bytes());
        cluster[name_at..new_end].copy_from_slice(&name);
    }
    let end = old_end.max(new_end).min(cluster.len());
    cluster[new_end..end].fill(0);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::qcow2::Header;

    /// A version 3 header with a backing format extension and a name.
    fn image(with_backing: bool) -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        b[0..4].copy_from_slice(&0x5146_49fbu32.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        b[36..40].copy_from_slice(&1u32.to_be_bytes());
        b[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        b[48..56].copy_from_slice(&(1u64 << 16).to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b[112..116].copy_from_slice(&0xe279_2acau32.to_be_bytes());
        b[116..120].copy_from_slice(&5u32.to_be_bytes());
        b[120..125].copy_from_slice(b"qcow2");
        if with_backing {
            b[8..16].copy_from_slice(&136u64.to_be_bytes());
            b[16..20].copy_from_slice(&9u32.to_be_bytes());
            b[136..145].copy_from_slice(b"base.img!");
        }
        b
    }

    #[test]
    fn adds_replaces_and_removes_keeping_the_rest() {
        for backing in [false, true] {
            let mut c = image(backing);
            let ext = BitmapsExt {
                nb_bitmaps: 2,
                dir_size: 64,
                dir_offset: 5 << 16,
            };
            assert!(set_bitmaps_ext(&mut c, Some(ext), 1).is_some());
            let h = Header::parse(&c).expect("parse");
            assert_eq!(h.bitmaps, Some((2, 64, 5 << 16)));
            assert_eq!(h.autoclear, 1);
            assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
            let name = backing.then(|| "base.img!".to_string());
            assert_eq!(h.backing_file, name);
            let ext = BitmapsExt {
                nb_bitmaps: 3,
                ..ext
            };
            assert!(set_bitmaps_ext(&mut c, Some(ext), 1).is_some());
            assert_eq!(
                Header::parse(&c).expect("parse").bitmaps.map(|b| b.0),
                Some(3)
            );
            assert!(set_bitmaps_ext(&mut c, None, 0).is_some());
            let h = Header::parse(&c).expect("parse");
            assert_eq!((h.bitmaps, h.autoclear), (None, 0));
            assert_eq!(h.backing_file, name);
            assert_eq!(c, image(backing));
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut c = image(true);
        c[8..16].copy_from_slice(&65530u64.to_be_bytes());
        assert_eq!(set_bitmaps_ext(&mut c, None, 0), None);
        let mut short = vec![0u8; 50];
        assert_eq!(set_bitmaps_ext(&mut short, None, 0), None);
    }
}
