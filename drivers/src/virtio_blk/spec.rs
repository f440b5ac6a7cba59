//! virtio-blk as the virtio 1.2 spec defines it (§5.2): feature bits,
//! request types, status codes, and the device configuration layout. No
//! I/O here.

/// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` in config space is valid.
pub const F_SEG_MAX: u32 = 2;
/// `VIRTIO_BLK_F_RO`: the device is read-only.
pub const F_RO: u32 = 5;
/// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` is valid.
pub const F_BLK_SIZE: u32 = 6;
/// `VIRTIO_BLK_F_FLUSH`: flush requests.
pub const F_FLUSH: u32 = 9;
/// `VIRTIO_BLK_F_TOPOLOGY`: topology information is valid.
pub const F_TOPOLOGY: u32 = 10;
/// `VIRTIO_BLK_F_CONFIG_WCE`: the driver may switch the write cache mode.
pub const F_CONFIG_WCE: u32 = 11;
/// `VIRTIO_BLK_F_MQ`: `num_queues` is valid.
pub const F_MQ: u32 = 12;
/// `VIRTIO_BLK_F_DISCARD`: discard requests.
pub const F_DISCARD: u32 = 13;
/// `VIRTIO_BLK_F_WRITE_ZEROES`: write-zeroes requests.
pub const F_WRITE_ZEROES: u32 = 14;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
pub const F_INDIRECT_DESC: u32 = 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const F_EVENT_IDX: u32 = 29;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u32 = 32;
/// `VIRTIO_F_ACCESS_PLATFORM`: the device reaches memory through an IOMMU
/// (VDUSE requires it: its addresses are IOVAs).
pub const F_ACCESS_PLATFORM: u32 = 33;

/// Request types (`virtio_blk_outhdr.type`).
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Device id string.
pub const T_GET_ID: u32 = 8;
/// Discard.
pub const T_DISCARD: u32 = 11;
/// Write zeroes.
pub const T_WRITE_ZEROES: u32 = 13;

/// Status: success.
pub const S_OK: u8 = 0;
/// Status: the request failed.
pub const S_IOERR: u8 = 1;
/// Status: the request is not supported.
pub const S_UNSUPP: u8 = 2;

/// Sectors are 512 bytes whatever the logical block size.
pub const SECTOR_SHIFT: u32 = 9;
/// Bytes of the request header (`type`, `ioprio`, `sector`).
pub const OUTHDR_LEN: usize = 16;
/// Bytes of one discard / write-zeroes segment.
pub const DWZ_SEGMENT_LEN: usize = 16;
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
pub const WZ_FLAG_UNMAP: u32 = 1;
/// Length of the GET_ID string.
pub const ID_BYTES: usize = 20;

/// Data segments per request we advertise (`seg_max`), QEMU's value for
/// a 128-entry queue; `UIO_MAXIOV` stays far away even when segments
/// cross guest memory regions.
pub const SEG_MAX: u32 = 126;
/// Largest discard or write-zeroes range, in sectors (QEMU's 32768 sectors
/// is 16 MiB; we allow 1 GiB, a single fallocate either way).
pub const MAX_DWZ_SECTORS: u32 = 1 << 21;
/// Segments per discard / write-zeroes request.
pub const MAX_DWZ_SEG: u32 = 1;

/// Size of the configuration space we serve (`struct virtio_blk_config`
/// up to the zoned fields, padded); reads beyond our fields give zeroes.
pub const CONFIG_LEN: usize = 96;
/// Offset of `writeback` in the configuration space.
pub const CONFIG_WRITEBACK: usize = 32;
/// Offset of `seg_max` in the configuration space.
pub const CONFIG_SEG_MAX: usize = 12;

/// What the configuration space says; see [`DeviceConfig::to_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Logical block size in bytes.
    pub blk_size: u32,
    /// Request queues.
    pub num_queues: u16,
    /// Write-back cache on (`writeback`).
    pub writeback: bool,
}

impl DeviceConfig {
    /// The little-endian layout of `struct virtio_blk_config`.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0, &self.capacity.to_le_bytes());
        // size_max (8) stays 0: no VIRTIO_BLK_F_SIZE_MAX.
        put(CONFIG_SEG_MAX, &SEG_MAX.to_le_bytes());
        // geometry (16..20) stays 0: no VIRTIO_BLK_F_GEOMETRY.
        put(20, &self.blk_size.to_le_bytes());
        // topology: physical_block_exp, alignment_offset, min_io_size (in
        // logical blocks), opt_io_size.
        put(24, &[0, 0]);
        put(26, &1u16.to_le_bytes());
        put(28, &0u32.to_le_bytes());
        put(CONFIG_WRITEBACK, &[u8::from(self.writeback)]);
        put(34, &self.num_queues.to_le_bytes());
        put(36, &MAX_DWZ_SECTORS.to_le_bytes());
        put(40, &MAX_DWZ_SEG.to_le_bytes());
        put(44, &(self.blk_size >> SECTOR_SHIFT).to_le_bytes());
        put(48, &MAX_DWZ_SECTORS.to_le_bytes());
        put(52, &MAX_DWZ_SEG.to_le_bytes());
        put(56, &[1]); // write_zeroes_may_unmap
        b
    }
}

/// The device features of a virtio-blk export (the transport adds its own).
pub fn device_features(read_only: bool, num_queues: u16) -> u64 {
    let mut f = [
        F_VERSION_1,
        F_SEG_MAX,
        F_BLK_SIZE,
        F_FLUSH,
        F_TOPOLOGY,
        F_CONFIG_WCE,
        F_DISCARD,
        F_WRITE_ZEROES,
        F_INDIRECT_DESC,
        F_EVENT_IDX,
    ]
    .iter()
    .fold(0u64, |acc, &bit| acc | 1 << bit);
    if num_queues > 1 {
        f |= 1 << F_MQ;
    }
    if read_only {
        f |= 1 << F_RO;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout() {
        let c = DeviceConfig {
            capacity: 0x1122_3344_5566_7788,
            blk_size: 4096,
            num_queues: 3,
            writeback: true,
        }
        .to_bytes();
        assert_eq!(&c[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&c[12..16], &126u32.to_le_bytes());
        assert_eq!(&c[20..24], &4096u32.to_le_bytes());
        assert_eq!(c[32], 1);
        assert_eq!(&c[34..36], &3u16.to_le_bytes());
        assert_eq!(&c[44..48], &8u32.to_le_bytes());
    }

    #[test]
    fn features_by_mode() {
        let rw = device_features(false, 1);
        assert_eq!(rw & 1 << F_RO, 0);
        assert_eq!(rw & 1 << F_MQ, 0);
        assert_ne!(rw & 1 << F_EVENT_IDX, 0);
        let ro = device_features(true, 2);
        assert_ne!(ro & 1 << F_RO, 0);
        assert_ne!(ro & 1 << F_MQ, 0);
    }
}
