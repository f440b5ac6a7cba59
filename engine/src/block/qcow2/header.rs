//! The qcow2 header and its extensions, parsed from bytes (no I/O).
//!
//! Every field that later code uses as an offset, a size or a shift is
//! checked here, against QEMU's limits and with QEMU's error texts, so the
//! rest of the driver can index with the geometry it is given. What an
//! image asks for that ringstor does not do (encryption, external data
//! files, extended L2 entries, zstd) is refused here too.

use super::entry::OFFSET_MASK;

/// `QFI\xfb`.
pub(crate) const MAGIC: u32 = 0x5146_49fb;
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub(crate) const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bits.
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;
/// Compatible feature bits.
pub(crate) const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bits.
pub(crate) const AUTOCLEAR_BITMAPS: u64 = 1 << 0;

/// Bytes of a version 2 header; version 3 headers are at least 104.
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;
/// QEMU's limits (`block/qcow2.h`).
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MAX_BACKING_NAME: u32 = 1023;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_L1_BYTES: u64 = 32 << 20;

/// Why an image is not one ringstor opens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a qcow2 image, or a header QEMU would refuse, with QEMU's text.
    #[error("{0}")]
    Invalid(String),
    /// A qcow2 feature ringstor does not implement.
    #[error("{0}")]
    Unsupported(String),
}

fn invalid(msg: impl Into<String>) -> HeaderError {
    HeaderError::Invalid(msg.into())
}

/// The parts of the header the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size (9..=21).
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// 0 (none), 1 (AES), 2 (LUKS).
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Where the L1 table is.
    pub l1_table_offset: u64,
    /// Where the refcount table is.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// Feature bits.
    pub incompatible: u64,
    /// Feature bits.
    pub compatible: u64,
    /// Feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits (0..=6).
    pub refcount_order: u32,
    /// Bytes of the fixed header (extensions follow).
    pub header_length: u32,
    /// Backing file name, if any.
    pub backing_file: Option<String>,
    /// The backing format extension, if any.
    pub backing_format: Option<String>,
    /// The bitmaps extension, if present: (count, directory size, directory offset).
    pub bitmaps: Option<(u32, u64, u64)>,
    /// Extensions kept as they are when the header is rewritten: (type, data).
    pub unknown_extensions: Vec<(u32, Vec<u8>)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parses the first cluster of an image (`buf` may be shorter when the
    /// file is: whatever is missing reads as zeroes, as QEMU's reads do).
    pub fn parse(buf: &[u8]) -> Result<Header, HeaderError> {
        let mut head = [0u8; V3_HEADER_LEN];
        let n = buf.len().min(V3_HEADER_LEN);
        head[..n].copy_from_slice(&buf[..n]);
        if be32(&head, 0) != MAGIC {
            return Err(invalid("Image is not in qcow2 format"));
        }
        let version = be32(&head, 4);
        if !(2..=3).contains(&version) {
            return Err(HeaderError::Unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(&head, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(invalid(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            cluster_bits,
            size: be64(&head, 24),
            crypt_method: be32(&head, 32),
            l1_size: be32(&head, 36),
            l1_table_offset: be64(&head, 40),
            refcount_table_offset: be64(&head, 48),
            refcount_table_clusters: be32(&head, 56),
            nb_snapshots: be32(&head, 60),
            snapshots_offset: be64(&head, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            backing_file: None,
            backing_format: None,
            bitmaps: None,
            unknown_extensions: Vec::new(),
        };
        let mut compression_type = 0u8;
        if version == 3 {
            h.incompatible = be64(&head, 72);
            h.compatible = be64(&head, 80);
            h.autoclear = be64(&head, 88);
            h.refcount_order = be32(&head, 96);
            h.header_length = be32(&head, 100);
            if (h.header_length as usize) < V3_HEADER_LEN {
                return Err(invalid("qcow2 header too short"));
            }
            if u64::from(h.header_length) > cluster_size {
                return Err(invalid("qcow2 header exceeds cluster size"));
            }
            if h.header_length > 104 {
                compression_type = buf.get(104).copied().unwrap_or(0);
            }
        }
        let ext_start = h.header_length as usize;
        let backing_offset = be64(&head, 8);
        let backing_size = be32(&head, 16);
        let mut names = Vec::new();
        h.parse_extensions(buf, ext_start, backing_offset, cluster_size, &mut names)?;
        if h.incompatible & !INCOMPAT_KNOWN != 0 {
            let unknown = h.incompatible & !INCOMPAT_KNOWN;
            let list: Vec<String> = (0..64)
                .filter(|b| unknown & (1 << b) != 0)
                .map(|b| {
                    names
                        .iter()
                        .find(|(t, bit, _)| *t == 0 && *bit == b)
                        .map(|(_, _, n)| n.clone())
                        .unwrap_or_else(|| format!("Unknown incompatible feature: {:x}", 1u64 << b))
                })
                .collect();
            return Err(HeaderError::Unsupported(format!(
                "Unsupported qcow2 feature(s): {}",
                list.join(", ")
            )));
        }
        if h.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(HeaderError::Unsupported(
                "qcow2 images with an external data file are not supported by ringstor".into(),
            ));
        }
        if h.incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(HeaderError::Unsupported(
                "qcow2 images with extended L2 entries (subclusters) are not supported by ringstor"
                    .into(),
            ));
        }
        if h.incompatible & INCOMPAT_COMPRESSION != 0 {
            match compression_type {
                0 => {}
                1 => {
                    return Err(HeaderError::Unsupported(
                        "qcow2 images with zstd compression are not supported by ringstor".into(),
                    ))
                }
                t => {
                    return Err(invalid(format!("Unknown compression type '{t}'")));
                }
            }
        } else if compression_type != 0 {
            return Err(invalid(format!(
                "qcow2_header: Invalid compression type '{compression_type}': incompatible feature bit 'compression' is not set"
            )));
        }
        if h.refcount_order > 6 {
            return Err(invalid(
                "Reference count entry width too large; may not exceed 64 bits",
            ));
        }
        h.check_tables(cluster_size)?;
        if backing_offset != 0 {
            if backing_size > MAX_BACKING_NAME
                || backing_offset > cluster_size
                || backing_offset + u64::from(backing_size) > cluster_size
            {
                return Err(invalid("Backing file name too long"));
            }
            let start = backing_offset as usize;
            let end = start + backing_size as usize;
            let bytes = buf.get(start..end).unwrap_or(&[]);
            h.backing_file = Some(String::from_utf8_lossy(bytes).into_owned());
        }
        Ok(h)
    }

    fn check_tables(&self, cluster_size: u64) -> Result<(), HeaderError> {
        let aligned = |off: u64| off.is_multiple_of(cluster_size);
        let reft_bytes = u64::from(self.refcount_table_clusters) * cluster_size;
        if reft_bytes > MAX_REFTABLE_BYTES {
            return Err(invalid("Reference count table too large"));
        }
        if self.refcount_table_clusters == 0 {
            return Err(invalid("Image does not contain a reference count table"));
        }
        if !aligned(self.refcount_table_offset) || self.refcount_table_offset & !OFFSET_MASK != 0 {
            return Err(invalid("Invalid reference count table offset"));
        }
        if self.nb_snapshots > 0 && !aligned(self.snapshots_offset) {
            return Err(invalid("Invalid snapshot table offset"));
        }
        if u64::from(self.l1_size) * 8 > MAX_L1_BYTES {
            return Err(invalid("Active L1 table too large"));
        }
        // Each L2 table maps cluster_size / 8 clusters.
        let l2_bits = self.cluster_bits - 3;
        let per_l1 = 1u64 << (self.cluster_bits + l2_bits);
        let needed = self.size.div_ceil(per_l1);
        if self.size > (1u64 << 62) || needed > u64::from(self.l1_size) {
            return Err(invalid("L1 table is too small"));
        }
        if self.l1_size > 0
            && (!aligned(self.l1_table_offset) || self.l1_table_offset & !OFFSET_MASK != 0)
        {
            return Err(invalid("Invalid L1 table offset"));
        }
        Ok(())
    }

    fn parse_extensions(
        &mut self,
        buf: &[u8],
        mut at: usize,
        backing_offset: u64,
        cluster_size: u64,
        names: &mut Vec<(u8, u8, String)>,
    ) -> Result<(), HeaderError> {
        // Extensions end at the backing file name, or the first cluster's end.
        let end = if backing_offset != 0 && backing_offset <= cluster_size {
            backing_offset as usize
        } else {
            cluster_size as usize
        };
        let end = end.min(buf.len());
        while at + 8 <= end {
            let kind = be32(buf, at);
            let len = be32(buf, at + 4) as usize;
            at += 8;
            if kind == EXT_END {
                break;
            }
            if len > end - at {
                return Err(invalid("Invalid extension length"));
            }
            let data = &buf[at..at + len];
            match kind {
                EXT_BACKING_FORMAT => {
                    let s = String::from_utf8_lossy(data);
                    self.backing_format = Some(s.trim_end_matches('\0').to_string());
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(48) {
                        let name = String::from_utf8_lossy(&e[2..]);
                        names.push((e[0], e[1], name.trim_end_matches('\0').to_string()));
                    }
                    self.unknown_extensions.push((kind, data.to_vec()));
                }
                EXT_BITMAPS => {
                    if len < 24 {
                        return Err(invalid("bitmaps_ext: Invalid extension length"));
                    }
                    self.bitmaps = Some((be32(data, 0), be64(data, 8), be64(data, 16)));
                }
                EXT_CRYPTO | EXT_DATA_FILE => self.unknown_extensions.push((kind, data.to_vec())),
                _ => self.unknown_extensions.push((kind, data.to_vec())),
            }
            at += len.next_multiple_of(8);
        }
        Ok(())
    }

    /// QEMU's `compat` string.
    pub fn compat(&self) -> &'static str {
        if self.version == 2 {
            "0.10"
        } else {
            "1.1"
        }
    }

    /// The image was not closed cleanly by a QEMU with lazy refcounts.
    pub fn dirty(&self) -> bool {
        self.incompatible & INCOMPAT_DIRTY != 0
    }

    /// QEMU marked the image corrupt.
    pub fn corrupt(&self) -> bool {
        self.incompatible & INCOMPAT_CORRUPT != 0
    }

    /// The lazy refcounts compatible bit.
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible & COMPAT_LAZY_REFCOUNTS != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(cluster_bits: u32, size: u64, l1_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; 1 << cluster_bits];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&l1_size.to_be_bytes());
        let cs = 1u64 << cluster_bits;
        b[40..48].copy_from_slice(&(3 * cs).to_be_bytes());
        b[48..56].copy_from_slice(&cs.to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    #[test]
    fn parses_and_checks() {
        let b = v3(16, 1 << 30, 2);
        let h = Header::parse(&b).expect("parse");
        assert_eq!((h.version, h.cluster_size(), h.size), (3, 65536, 1 << 30));
        let mut bad = b.clone();
        bad[0] = 0;
        assert_eq!(
            Header::parse(&bad),
            Err(invalid("Image is not in qcow2 format"))
        );
        let mut bad = b.clone();
        bad[20..24].copy_from_slice(&30u32.to_be_bytes());
        assert_eq!(
            Header::parse(&bad),
            Err(invalid("Unsupported cluster size: 2^30"))
        );
        let small = v3(16, 1 << 40, 2);
        assert_eq!(Header::parse(&small), Err(invalid("L1 table is too small")));
        let mut feat = b.clone();
        feat[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(
            Header::parse(&feat),
            Err(HeaderError::Unsupported(_))
        ));
    }

    #[test]
    fn extensions_and_backing_name() {
        let mut b = v3(16, 1 << 20, 1);
        // Backing format extension, then the end marker, then the name.
        b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[116..120].copy_from_slice(&5u32.to_be_bytes());
        b[120..125].copy_from_slice(b"qcow2");
        let name = b"base.qcow2";
        b[8..16].copy_from_slice(&200u64.to_be_bytes());
        b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        b[200..200 + name.len()].copy_from_slice(name);
        let h = Header::parse(&b).expect("parse");
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.backing_file.as_deref(), Some("base.qcow2"));
        b[116..120].copy_from_slice(&500u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
    }
}
