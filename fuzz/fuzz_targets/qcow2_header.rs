//! qcow2 metadata parsing: the header and its extensions, L2 entries,
//! refcount blocks of every width.
//!
//! Input layout: the first cluster of an image (what `Header::parse` gets
//! on open); the same bytes are then read as big-endian L2 entries with
//! the parsed cluster size (or 64 KiB), and as a refcount block updated
//! at positions taken from the input.
//!
//! Invariants: no panic; an accepted header has QEMU's limits (version 2
//! or 3, cluster bits 9..=21, refcount order ≤ 6, a header inside its
//! first cluster, an L1 table large enough for the virtual size, a
//! backing file name inside the first cluster); a decoded L2 entry's host
//! range does not overflow and a compressed one spans at most a cluster
//! plus a sector; a refcount write changes exactly its own entry.
#![no_main]

use engine::block::qcow2::{fuzzing, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cluster_bits = 16;
    if let Ok(h) = Header::parse(data) {
        assert!(h.version == 2 || h.version == 3);
        assert!((9..=21).contains(&h.cluster_bits));
        assert!(h.refcount_order <= 6);
        assert!(u64::from(h.header_length) <= h.cluster_size());
        let per_l1 = 1u64 << (2 * h.cluster_bits - 3);
        assert!(h.size.div_ceil(per_l1) <= u64::from(h.l1_size));
        assert!(h.refcount_table_clusters > 0);
        if let Some(name) = &h.backing_file {
            assert!(name.len() <= 1023 * 3);
        }
        cluster_bits = h.cluster_bits;
    }
    let cs = 1u64 << cluster_bits;
    for chunk in data.chunks_exact(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        let raw = u64::from_be_bytes(a);
        if let Some((start, len)) = fuzzing::l2_host_range(raw, cluster_bits) {
            assert!(start.checked_add(len).is_some());
            // At most 2^(cluster_bits - 8) sectors: two clusters.
            assert!(len <= 2 * cs, "entry {raw:#x}: {len} bytes");
        }
    }
    if data.len() >= 10 {
        let mut block = data[10..].to_vec();
        let order = u32::from(data[0]);
        let index = usize::from(u16::from_le_bytes([data[1], data[2]]));
        let mut v = [0u8; 8];
        v[..7].copy_from_slice(&data[3..10]);
        let value = u64::from_le_bytes(v) | (u64::from(data[0] >> 3) << 56);
        assert!(fuzzing::refcount_roundtrip(&mut block, order, index, value));
    }
});
