//! L1, L2 and refcount entries: their bits, decoded (no I/O).

/// Host offset bits of L1 and standard L2 entries (bits 9..=55).
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The cluster's refcount is exactly one: it may be written in place.
pub(crate) const COPIED: u64 = 1 << 63;
/// A compressed cluster descriptor.
pub(crate) const COMPRESSED: u64 = 1 << 62;
/// Reads as zeroes (version 3).
pub(crate) const ZERO: u64 = 1;
/// Host offset bits of a refcount table entry.
pub(crate) const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// What a guest cluster is, from its L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Not in this image: the backing file's data, or zeroes.
    Unallocated,
    /// Reads as zeroes; `host` is kept allocated when preallocated.
    Zero { host: Option<u64>, copied: bool },
    /// Data at `host`; `copied` when nobody else references the cluster.
    Data { host: u64, copied: bool },
    /// Compressed data at `offset`, `len` bytes at most.
    Compressed { offset: u64, len: u64 },
}

impl Mapping {
    /// Decodes an L2 entry of an image with `cluster_bits`; the L2 entry
    /// is refused when it points inside a cluster.
    pub(crate) fn decode(entry: u64, cluster_bits: u32) -> Result<Mapping, u64> {
        if entry & COMPRESSED != 0 {
            let shift = 62 - (cluster_bits - 8);
            let offset = entry & ((1u64 << shift) - 1);
            let sectors = ((entry >> shift) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (offset & 511);
            return Ok(Mapping::Compressed { offset, len });
        }
        let host = entry & OFFSET_MASK;
        let copied = entry & COPIED != 0;
        if host & ((1u64 << cluster_bits) - 1) != 0 {
            return Err(host);
        }
        if entry & ZERO != 0 {
            return Ok(Mapping::Zero {
                host: (host != 0).then_some(host),
                copied,
            });
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        Ok(Mapping::Data { host, copied })
    }

    /// Host clusters this mapping holds a reference on: `(first byte, bytes)`.
    pub(crate) fn host_range(self, cluster_size: u64) -> Option<(u64, u64)> {
        match self {
            Mapping::Unallocated | Mapping::Zero { host: None, .. } => None,
            Mapping::Zero { host: Some(h), .. } | Mapping::Data { host: h, .. } => {
                Some((h, cluster_size))
            }
            // QEMU frees whole 512-byte sectors of a compressed cluster.
            Mapping::Compressed { offset, len } => {
                let start = offset & !511;
                Some((start, (offset + len).next_multiple_of(512) - start))
            }
        }
    }
}

/// Reads refcount `index` of a refcount block with `1 << order`-bit entries.
pub(crate) fn refcount_get(block: &[u8], order: u32, index: usize) -> u64 {
    let bits = 1usize << order;
    match bits {
        1 | 2 | 4 => {
            let bit = index * bits;
            let byte = block.get(bit / 8).copied().unwrap_or(0);
            u64::from((byte >> (bit % 8)) & ((1u8 << bits) - 1))
        }
        _ => {
            let n = bits / 8;
            let at = index * n;
            block.get(at..at + n).map_or(0, |b| {
                b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
            })
        }
    }
}

/// Writes refcount `index`; `value` must fit (callers check [`refcount_max`]).
pub(crate) fn refcount_set(block: &mut [u8], order: u32, index: usize, value: u64) {
    let bits = 1usize << order;
    match bits {
        1 | 2 | 4 => {
            let bit = index * bits;
            let mask = ((1u8 << bits) - 1) << (bit % 8);
            if let Some(byte) = block.get_mut(bit / 8) {
                *byte = (*byte & !mask) | (((value as u8) << (bit % 8)) & mask);
            }
        }
        _ => {
            let n = bits / 8;
            let at = index * n;
            if let Some(b) = block.get_mut(at..at + n) {
                for (i, x) in b.iter_mut().enumerate() {
                    *x = (value >> (8 * (n - 1 - i))) as u8;
                }
            }
        }
    }
}

/// The largest refcount `1 << order`-bit entries hold.
pub(crate) fn refcount_max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_l2_entries() {
        assert_eq!(Mapping::decode(0, 16), Ok(Mapping::Unallocated));
        assert_eq!(
            Mapping::decode(COPIED | 0x50000, 16),
            Ok(Mapping::Data {
                host: 0x50000,
                copied: true
            })
        );
        assert_eq!(
            Mapping::decode(ZERO, 16),
            Ok(Mapping::Zero {
                host: None,
                copied: false
            })
        );
        assert_eq!(Mapping::decode(0x50200, 16), Err(0x50200));
        // 64 KiB clusters: offset in bits 0..54, extra sectors in 54..62.
        let e = COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            Mapping::decode(e, 16),
            Ok(Mapping::Compressed {
                offset: 0x12345,
                len: 4 * 512 - 0x145
            })
        );
        assert_eq!(
            Mapping::Compressed {
                offset: 0x12345,
                len: 4 * 512 - 0x145
            }
            .host_range(65536),
            Some((0x12200, 2048))
        );
    }

    #[test]
    fn refcount_widths() {
        for order in 0..=6u32 {
            let mut b = vec![0u8; 64];
            let max = refcount_max(order);
            let n = 64 * 8 / (1usize << order);
            for i in 0..n {
                refcount_set(&mut b, order, i, (i as u64) & max);
            }
            for i in 0..n {
                assert_eq!(
                    refcount_get(&b, order, i),
                    (i as u64) & max,
                    "order {order}"
                );
            }
        }
        let mut b = vec![0u8; 2];
        refcount_set(&mut b, 4, 0, 0x0102);
        assert_eq!(b, [1, 2]);
    }
}
