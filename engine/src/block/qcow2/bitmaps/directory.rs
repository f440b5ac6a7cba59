//! The bitmaps extension, the bitmap directory and bitmap table entries
//! of a qcow2 image, parsed from bytes and serialised (no I/O).
//!
//! The image is untrusted: every count, size, offset and name length is
//! checked against QEMU's limits (`block/qcow2-bitmap.c`), with QEMU's
//! error texts, before anything is allocated or indexed with it.
//!
//! ```text
//!  extension (24 bytes): nb_bitmaps u32 | reserved u32 | dir size u64 | dir offset u64
//!  directory entry:      table offset u64 | table size u32 | flags u32 |
//!                        type u8 | granularity bits u8 | name size u16 |
//!                        extra data size u32 | extra data | name | pad to 8
//!  table entry (u64):    bits 9..=55 data cluster offset; bit 0 with no
//!                        offset: the cluster reads as all ones
//! ```

use crate::block::qcow2::header::{be32, be64};

/// `QCOW2_MAX_BITMAPS`.
pub(crate) const MAX_BITMAPS: u32 = 65535;
/// `QCOW2_MAX_BITMAP_DIRECTORY_SIZE`.
pub(crate) const MAX_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
/// `BME_MAX_TABLE_SIZE` (entries).
pub(crate) const MAX_TABLE_SIZE: u32 = 0x0800_0000;
/// `BME_MAX_PHYS_SIZE`: bytes of bitmap data.
pub(crate) const MAX_PHYS_SIZE: u64 = 0x2000_0000;
/// Granularity bits QEMU accepts.
pub(crate) const MIN_GRANULARITY_BITS: u8 = 9;
pub(crate) const MAX_GRANULARITY_BITS: u8 = 31;
/// `BME_MAX_NAME_SIZE`.
pub(crate) const MAX_NAME_SIZE: usize = 1023;

/// The bitmap was not stored cleanly (in use by a writer, or a crash).
pub(crate) const FLAG_IN_USE: u32 = 1 << 0;
/// Writes are recorded in it (an enabled bitmap).
pub(crate) const FLAG_AUTO: u32 = 1 << 1;
const RESERVED_FLAGS: u32 = 0xffff_fffc;
/// The only bitmap type: dirty tracking.
const TYPE_DIRTY_TRACKING: u8 = 1;
/// Fixed part of a directory entry.
const ENTRY_HEADER: usize = 24;

/// Table entry bits.
const TABLE_RESERVED: u64 = 0xff00_0000_0000_01fe;
pub(crate) const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const TABLE_ALL_ONES: u64 = 1;

/// Why the bitmaps of an image cannot be read, in QEMU's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryError(pub String);

fn err(msg: impl Into<String>) -> DirectoryError {
    DirectoryError(msg.into())
}

/// The bitmaps header extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BitmapsExt {
    pub(crate) nb_bitmaps: u32,
    pub(crate) dir_size: u64,
    pub(crate) dir_offset: u64,
}

impl BitmapsExt {
    /// Checks the extension's data as QEMU's `qcow2_read_extensions` does.
    pub(crate) fn parse(data: &[u8], cluster_size: u64) -> Result<BitmapsExt, DirectoryError> {
        if data.len() < 24 {
            return Err(err("bitmaps_ext: Invalid extension length"));
        }
        if be32(data, 4) != 0 {
            return Err(err("bitmaps_ext: Reserved field is not zero"));
        }
        let e = BitmapsExt {
            nb_bitmaps: be32(data, 0),
            dir_size: be64(data, 8),
            dir_offset: be64(data, 16),
        };
        if e.nb_bitmaps == 0 {
            return Err(err("found bitmaps extension with zero bitmaps"));
        }
        if e.nb_bitmaps > MAX_BITMAPS {
            return Err(err(format!(
                "bitmaps_ext: Image has {} bitmaps, exceeding the QEMU supported maximum of {MAX_BITMAPS}",
                e.nb_bitmaps
            )));
        }
        if e.dir_size > MAX_DIRECTORY_SIZE {
            return Err(err(format!(
                "bitmaps_ext: bitmap directory size ({}) exceeds the maximum supported size ({MAX_DIRECTORY_SIZE})",
                e.dir_size
            )));
        }
        if !e.dir_offset.is_multiple_of(cluster_size) || e.dir_offset & !TABLE_OFFSET_MASK != 0 {
            return Err(err("bitmaps_ext: invalid bitmap directory offset"));
        }
        Ok(e)
    }

    /// The extension's 24 data bytes.
    pub(crate) fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.nb_bitmaps.to_be_bytes());
        b[8..16].copy_from_slice(&self.dir_size.to_be_bytes());
        b[16..24].copy_from_slice(&self.dir_offset.to_be_bytes());
        b
    }
}

/// One bitmap of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    pub(crate) table_offset: u64,
    pub(crate) table_size: u32,
    pub(crate) flags: u32,
    pub(crate) granularity_bits: u8,
    /// The name as stored (QEMU does not require UTF-8).
    pub(crate) name: Vec<u8>,
}

impl DirEntry {
    pub(crate) fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }

    pub(crate) fn auto(&self) -> bool {
        self.flags & FLAG_AUTO != 0
    }

    /// The name as the block layer shows it.
    pub(crate) fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Bytes of the entry in the directory.
    pub(crate) fn size(&self) -> u64 {
        entry_size(self.name.len())
    }

    /// QEMU's `check_dir_entry` for an image of `image_len` bytes.
    fn check(&self, cluster_size: u64, image_len: u64) -> bool {
        let bad = self.table_size == 0
            || self.table_offset == 0
            || !self.table_offset.is_multiple_of(cluster_size)
            || self.table_offset & !TABLE_OFFSET_MASK != 0
            || self.table_size > MAX_TABLE_SIZE
            || !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&self.granularity_bits)
            || self.flags & RESERVED_FLAGS != 0
            || self.name.len() > MAX_NAME_SIZE;
        if bad {
            return false;
        }
        let phys = u64::from(self.table_size) * cluster_size;
        if phys > MAX_PHYS_SIZE {
            return false;
        }
        // Enough table for the image, unless the bitmap is stale anyway.
        let covered = (phys * 8) << self.granularity_bits;
        self.in_use() || image_len <= covered
    }
}

/// Bytes of a directory entry with a name of `name_len` bytes.
pub(crate) fn entry_size(name_len: usize) -> u64 {
    ((ENTRY_HEADER + name_len) as u64).next_multiple_of(8)
}

/// Table entries (clusters of bitmap data) a bitmap of an `image_len`-byte
/// image at `granularity_bits` needs.
pub(crate) fn table_size(image_len: u64, granularity_bits: u8, cluster_size: u64) -> u64 {
    let bits = image_len.div_ceil(1u64 << granularity_bits);
    bits.div_ceil(8).div_ceil(cluster_size)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses a directory of `ext.nb_bitmaps` entries (QEMU's
/// `bitmap_list_load`), checking each entry against the image.
pub(crate) fn parse(
    dir: &[u8],
    nb_bitmaps: u32,
    cluster_size: u64,
    image_len: u64,
) -> Result<Vec<DirEntry>, DirectoryError> {
    let broken = || err("Broken bitmap directory");
    if dir.is_empty() {
        return Err(err("Requested bitmap directory size is zero"));
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < dir.len() {
        if dir.len() - at < ENTRY_HEADER {
            return Err(broken());
        }
        if out.len() as u64 >= u64::from(nb_bitmaps) {
            return Err(err("More bitmaps found than specified in header extension"));
        }
        let e = &dir[at..];
        let name_size = usize::from(be16(e, 18));
        let extra = be32(e, 20) as usize;
        let size = (ENTRY_HEADER as u64 + name_size as u64 + extra as u64).next_multiple_of(8);
        if size > (dir.len() - at) as u64 {
            return Err(broken());
        }
        if extra != 0 {
            return Err(err("Bitmap extra data is not supported"));
        }
        let name = e[ENTRY_HEADER..ENTRY_HEADER + name_size].to_vec();
        let entry = DirEntry {
            table_offset: be64(e, 0),
            table_size: be32(e, 8),
            flags: be32(e, 12),
            granularity_bits: e[17],
            name,
        };
        if e[16] != TYPE_DIRTY_TRACKING || !entry.check(cluster_size, image_len) {
            return Err(err(format!(
                "Bitmap '{}' doesn't satisfy the constraints",
                entry.name_str()
            )));
        }
        out.push(entry);
        at += size as usize;
    }
    if out.len() as u64 != u64::from(nb_bitmaps) {
        return Err(err("Less bitmaps found than specified in header extension"));
    }
    Ok(out)
}

/// The directory bytes of `entries` (QEMU's `bitmap_list_store`); refused
/// when an entry breaks QEMU's constraints or the whole is too large.
pub(crate) fn serialise(
    entries: &[DirEntry],
    cluster_size: u64,
    image_len: u64,
) -> Result<Vec<u8>, DirectoryError> {
    let size: u64 = entries.iter().map(DirEntry::size).sum();
    if entries.is_empty() || entries.len() > MAX_BITMAPS as usize || size > MAX_DIRECTORY_SIZE {
        return Err(err("Bitmap directory is too large"));
    }
    let mut out = Vec::with_capacity(size as usize);
    for e in entries {
        if !e.check(cluster_size, image_len) {
            return Err(err(format!(
                "Bitmap '{}' doesn't satisfy the constraints",
                e.name_str()
            )));
        }
        let start = out.len();
        out.extend_from_slice(&e.table_offset.to_be_bytes());
        out.extend_from_slice(&e.table_size.to_be_bytes());
        out.extend_from_slice(&e.flags.to_be_bytes());
        out.push(TYPE_DIRTY_TRACKING);
        out.push(e.granularity_bits);
        out.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&e.name);
        out.resize(start + e.size() as usize, 0);
    }
    Ok(out)
}

/// Decodes a bitmap table (QEMU's `check_table_entry` on each entry):
/// data cluster offsets, 0 for a cluster of zeroes, or [`TABLE_ALL_ONES`].
pub(crate) fn parse_table(bytes: &[u8], cluster_size: u64) -> Result<Vec<u64>, DirectoryError> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let v = be64(c, 0);
            let off = v & TABLE_OFFSET_MASK;
            let ok = v & TABLE_RESERVED == 0
                && (off == 0 || (v & TABLE_ALL_ONES == 0 && off.is_multiple_of(cluster_size)));
            if ok {
                Ok(v)
            } else {
                Err(err("Invalid bitmap table entry"))
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
