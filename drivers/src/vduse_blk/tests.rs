//! The device logic against the in-process stand-in kernel: a driver
//! (a split ring written by hand, in memfd memory the stand-in hands
//! over as IOTLB regions) sends requests through a vduse-blk export into
//! a file node, and the data is checked in the image. Covers creation,
//! queue setup, each request type, GET_VQ_STATE, an IOTLB update while
//! running, reset and restart, hostile queue info, and removal.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine::block::{BlockNode, FileOptions, NodeOptions};
use engine::iothread::{IoThread, IoThreadConfig};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

use super::export::{device_features, start_with, VduseBlkOptions};
use super::message::Request;
use super::standin::{FakeDevice, StandIn};
use super::sys::{self, IotlbEntry, VqInfo, ACCESS_RW};
use crate::export::{Export, ExportCommon, RemoveMode};
use crate::virtio_blk::spec::{
    F_ACCESS_PLATFORM, F_CONFIG_WCE, F_DISCARD, F_FLUSH, F_VERSION_1, F_WRITE_ZEROES, S_IOERR,
    S_OK, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES,
};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const QSIZE: u16 = 16;
const DRIVER_OK: u8 = 0x0f; // ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK

/// IOVA of the rings and of the data buffers, and the memfd layout.
const RING_IOVA: u64 = 0x10_0000;
const RING_LEN: u64 = 0x1_0000;
const DATA_IOVA: u64 = 0x40_0000;
const DATA_LEN: u64 = 0x10_0000;
/// Split ring parts inside the ring region.
const DESC: u64 = RING_IOVA;
const AVAIL: u64 = RING_IOVA + 0x1000;
const USED: u64 = RING_IOVA + 0x2000;
const MOVED_IOVA: u64 = 0x80_0000;
const IMG: u64 = 4 << 20;

struct Rig {
    _dir: tempfile::TempDir,
    img: std::path::PathBuf,
    _thread: IoThread,
    host: Arc<StandIn>,
    dev: Arc<FakeDevice>,
    export: Box<dyn Export>,
    drained: crossbeam_channel::Receiver<String>,
    memfd: File,
    /// The driver's view of the memory, at the IOVAs it gave the device.
    drv: GuestMemoryMmap,
    data_iova: u64,
    next_desc: u16,
}

fn entry(start: u64, len: u64, offset: u64) -> IotlbEntry {
    IotlbEntry {
        offset,
        start,
        last: start + len - 1,
        perm: ACCESS_RW,
    }
}

fn driver_view(memfd: &File, data_iova: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges_with_files([
        (
            GuestAddress(RING_IOVA),
            RING_LEN as usize,
            Some(FileOffset::new(memfd.try_clone().expect("dup"), 0)),
        ),
        (
            GuestAddress(data_iova),
            DATA_LEN as usize,
            Some(FileOffset::new(memfd.try_clone().expect("dup"), RING_LEN)),
        ),
    ])
    .expect("driver's view")
}

fn node(img: &Path) -> Arc<BlockNode> {
    BlockNode::open(
        "disk0",
        "file",
        NodeOptions::File(FileOptions {
            filename: img.to_string_lossy().into(),
            direct: false,
            no_flush: false,
            read_only: false,
            locking: false,
            host_device: false,
        }),
    )
    .expect("node")
}

fn opts() -> VduseBlkOptions {
    VduseBlkOptions {
        name: "vd0".into(),
        num_queues: 1,
        queue_size: 256,
        logical_block_size: 512,
        serial: "serial-e0".into(),
    }
}

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("{} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}
static LOGGER: StderrLog = StderrLog;

impl Rig {
    fn new() -> Rig {
        let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Debug));
        let dir = tempfile::tempdir().expect("dir");
        let img = dir.path().join("img");
        File::create(&img)
            .and_then(|f| f.set_len(IMG))
            .expect("img");
        let thread = IoThread::spawn(IoThreadConfig {
            name: "t-vduse".into(),
            cpu: None,
            movable: false,
            ring_entries: 256,
            poll_max_ns: 0,
        })
        .expect("iothread");
        let (tx, drained) = crossbeam_channel::unbounded();
        let common = ExportCommon {
            id: "e0".into(),
            node: node(&img),
            writable: true,
            writethrough: false,
            iothreads: vec![thread.handle().clone()],
            on_drained: Arc::new(move |id: &str| {
                let _ = tx.send(id.to_string());
            }),
            stats: crate::stats::ExportStats::new("e0", "disk0"),
        };
        let host = Arc::new(StandIn::default());
        let export = start_with(common, opts(), host.clone()).expect("export");
        let dev = host.device("vd0");
        let memfd = sys::memfd(c"vduse-test").expect("memfd");
        memfd.set_len(RING_LEN + DATA_LEN).expect("size");
        *dev.iotlb.lock().expect("iotlb") = vec![
            (
                entry(RING_IOVA, RING_LEN, 0),
                memfd.try_clone().expect("dup"),
            ),
            (
                entry(DATA_IOVA, DATA_LEN, RING_LEN),
                memfd.try_clone().expect("dup"),
            ),
        ];
        let drv = driver_view(&memfd, DATA_IOVA);
        Rig {
            _dir: dir,
            img,
            _thread: thread,
            host,
            dev,
            export,
            drained,
            memfd,
            drv,
            data_iova: DATA_IOVA,
            next_desc: 0,
        }
    }

    /// Adds a chain at descriptor `base` to the avail ring.
    fn add_chain(&self, descs: &[(u64, u32, u16)], base: u16) {
        let n = descs.len() as u16;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let i = i as u16;
            let next = if i + 1 < n { base + i + 1 } else { 0 };
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            let at = DESC + 16 * u64::from(base + i);
            self.drv
                .write_slice(&d, GuestAddress(at))
                .expect("descriptor");
        }
        let idx: u16 = self
            .drv
            .read_obj(GuestAddress(AVAIL + 2))
            .expect("avail idx");
        let slot = AVAIL + 4 + 2 * u64::from(idx % QSIZE);
        self.drv
            .write_obj(base, GuestAddress(slot))
            .expect("avail entry");
        self.drv
            .write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .expect("avail idx");
    }

    /// The driver enables queue 0 and sets DRIVER_OK.
    fn driver_ok(&self, avail_index: u16) -> bool {
        *self.dev.features.lock().expect("features") = [
            F_VERSION_1,
            F_ACCESS_PLATFORM,
            F_FLUSH,
            F_DISCARD,
            F_WRITE_ZEROES,
        ]
        .iter()
        .fold(0, |a, b| a | 1 << b);
        self.dev.vq_info.lock().expect("info")[0] = VqInfo {
            index: 0,
            num: u32::from(QSIZE),
            desc_addr: DESC,
            driver_addr: AVAIL,
            device_addr: USED,
            state: [avail_index, 0, 0, 0],
            ready: 1,
        };
        self.dev.request(Request::SetStatus { status: DRIVER_OK }).0
    }

    fn used_idx(&self) -> u16 {
        self.drv
            .read_obj::<u16>(GuestAddress(USED + 2))
            .expect("used idx")
    }

    /// One request: a header, optional data, a status byte; returns the status.
    fn request(&mut self, t: u32, sector: u64, data: Option<(u64, u32, bool)>) -> u8 {
        let hdr = self.data_iova;
        let status = self.data_iova + 0x100;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.drv.write_slice(&h, GuestAddress(hdr)).expect("header");
        self.drv
            .write_obj(0xffu8, GuestAddress(status))
            .expect("status");
        let base = self.next_desc;
        let mut descs = vec![(hdr, 16, NEXT)];
        if let Some((addr, len, device_writes)) = data {
            let f = if device_writes { WRITE | NEXT } else { NEXT };
            descs.push((addr, len, f));
        }
        descs.push((status, 1, WRITE));
        self.next_desc = (base + descs.len() as u16) % (QSIZE - 3);
        let before = self.used_idx();
        self.add_chain(&descs, base);
        self.dev.kick(0);
        self.dev.wait_irq(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.used_idx() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "request not completed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.drv
            .read_obj::<u8>(GuestAddress(status))
            .expect("status")
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(&self.img).expect("image")
    }
}

#[test]
fn the_device_is_created_as_asked() {
    let rig = Rig::new();
    let spec = &rig.dev.spec;
    assert_eq!(spec.name, "vd0");
    assert_eq!(spec.device_id, sys::VIRTIO_ID_BLOCK);
    assert_eq!(spec.vq_num, 1);
    assert_eq!(spec.features, device_features(false, 1));
    assert_ne!(spec.features & 1 << F_ACCESS_PLATFORM, 0);
    assert_eq!(spec.features & 1 << F_CONFIG_WCE, 0);
    // capacity in sectors, blk_size at 20.
    assert_eq!(spec.config[0..8], (IMG >> 9).to_le_bytes());
    assert_eq!(spec.config[20..24], 512u32.to_le_bytes());
    assert_eq!(*rig.dev.max_sizes.lock().expect("sizes"), vec![Some(256)]);
    assert_eq!(rig.export.kind(), "vduse-blk");
    assert_eq!(rig.export.clients(), 0);
}

#[test]
fn requests_round_trip_through_iotlb_memory() {
    let mut rig = Rig::new();
    assert!(rig.driver_ok(0));
    let buf = rig.data_iova + 0x1000;
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    rig.drv
        .write_slice(&pattern, GuestAddress(buf))
        .expect("data");
    assert_eq!(rig.request(T_OUT, 8, Some((buf, 8192, false))), S_OK);
    assert_eq!(rig.image()[4096..4096 + 8192], pattern[..]);
    // Read back into another buffer.
    let back = rig.data_iova + 0x8000;
    assert_eq!(rig.request(T_IN, 8, Some((back, 8192, true))), S_OK);
    let mut got = vec![0u8; 8192];
    rig.drv
        .read_slice(&mut got, GuestAddress(back))
        .expect("read");
    assert_eq!(got, pattern);
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
    // GET_ID is the serial.
    let id = rig.data_iova + 0x4000;
    assert_eq!(rig.request(T_GET_ID, 0, Some((id, 20, true))), S_OK);
    let mut serial = [0u8; 9];
    rig.drv
        .read_slice(&mut serial, GuestAddress(id))
        .expect("id");
    assert_eq!(&serial, b"serial-e0");
    // Write-zeroes over the first 4 KiB written, discard over the rest.
    let seg = |sector: u64, n: u32| {
        let mut s = [0u8; 16];
        s[0..8].copy_from_slice(&sector.to_le_bytes());
        s[8..12].copy_from_slice(&n.to_le_bytes());
        s
    };
    let sega = rig.data_iova + 0x200;
    rig.drv
        .write_slice(&seg(8, 8), GuestAddress(sega))
        .expect("seg");
    assert_eq!(
        rig.request(T_WRITE_ZEROES, 0, Some((sega, 16, false))),
        S_OK
    );
    let img = rig.image();
    assert!(img[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(img[8192..12288], pattern[4096..]);
    rig.drv
        .write_slice(&seg(16, 8), GuestAddress(sega))
        .expect("seg");
    assert_eq!(rig.request(T_DISCARD, 0, Some((sega, 16, false))), S_OK);
    // Where the ring stands.
    let (ok, index, avail) = rig.dev.request(Request::GetVqState { index: 0 });
    assert!(ok);
    assert_eq!((index, avail), (0, 6));
    assert_eq!(rig.export.clients(), 1, "a driver is bound");
}

#[test]
fn an_iotlb_update_mid_run_remaps_the_buffers() {
    let mut rig = Rig::new();
    assert!(rig.driver_ok(0));
    let pattern = vec![0x5au8; 4096];
    rig.drv
        .write_slice(&pattern, GuestAddress(rig.data_iova + 0x1000))
        .expect("data");
    assert_eq!(
        rig.request(T_OUT, 0, Some((rig.data_iova + 0x1000, 4096, false))),
        S_OK
    );
    // The kernel moves the data region to another IOVA and says so.
    let fetched = rig
        .dev
        .iotlb_calls
        .load(std::sync::atomic::Ordering::Relaxed);
    rig.dev.iotlb.lock().expect("iotlb")[1].0 = entry(MOVED_IOVA, DATA_LEN, RING_LEN);
    let (ok, _, _) = rig.dev.request(Request::UpdateIotlb {
        start: DATA_IOVA,
        last: DATA_IOVA + DATA_LEN - 1,
    });
    assert!(ok);
    let (ok, _, _) = rig.dev.request(Request::UpdateIotlb {
        start: MOVED_IOVA,
        last: MOVED_IOVA + DATA_LEN - 1,
    });
    assert!(ok);
    assert!(
        rig.dev
            .iotlb_calls
            .load(std::sync::atomic::Ordering::Relaxed)
            > fetched
    );
    rig.drv = driver_view(&rig.memfd, MOVED_IOVA);
    rig.data_iova = MOVED_IOVA;
    let pattern2 = vec![0xa5u8; 4096];
    rig.drv
        .write_slice(&pattern2, GuestAddress(MOVED_IOVA + 0x1000))
        .expect("data");
    assert_eq!(
        rig.request(T_OUT, 8, Some((MOVED_IOVA + 0x1000, 4096, false))),
        S_OK
    );
    let img = rig.image();
    assert_eq!(img[..4096], pattern[..]);
    assert_eq!(img[4096..8192], pattern2[..]);
}

#[test]
fn a_buffer_outside_the_iotlb_is_an_io_error() {
    let mut rig = Rig::new();
    assert!(rig.driver_ok(0));
    // The header and status are mapped; the data buffer is not.
    assert_eq!(
        rig.request(T_OUT, 0, Some((0x7000_0000, 4096, false))),
        S_IOERR
    );
    assert!(rig.image().iter().all(|&b| b == 0));
    // The queue keeps serving.
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
}

#[test]
fn reset_stops_queues_and_restart_resumes_from_the_kernel_state() {
    let mut rig = Rig::new();
    assert!(rig.driver_ok(0));
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
    // Status without DRIVER_OK stops the queue; GET_VQ_STATE answers where it ended.
    assert!(rig.dev.request(Request::SetStatus { status: 0x03 }).0);
    assert!(
        rig.dev.kicks.lock().expect("kicks")[0].is_none(),
        "kick fd de-assigned"
    );
    assert_eq!(
        rig.dev.request(Request::GetVqState { index: 0 }),
        (true, 0, 2)
    );
    // Reset forgets it all.
    assert!(rig.dev.request(Request::SetStatus { status: 0 }).0);
    assert_eq!(
        rig.dev.request(Request::GetVqState { index: 0 }),
        (true, 0, 0)
    );
    assert_eq!(rig.export.clients(), 0);
    // The driver comes back with the ring where it left it.
    assert!(rig.driver_ok(2));
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
    assert_eq!(
        rig.dev.request(Request::GetVqState { index: 0 }),
        (true, 0, 3)
    );
}

#[test]
fn hostile_messages_are_refused() {
    let rig = Rig::new();
    // A queue we do not have, a type we do not know, an inverted range.
    assert!(!rig.dev.request(Request::GetVqState { index: 7 }).0);
    assert!(!rig.dev.request(Request::Unknown { kind: 99 }).0);
    assert!(
        !rig.dev
            .request(Request::UpdateIotlb { start: 10, last: 1 })
            .0
    );
    // A ring larger than VQ_SETUP allowed: DRIVER_OK is refused.
    rig.dev.vq_info.lock().expect("info")[0] = VqInfo {
        num: 4096,
        ready: 1,
        ..VqInfo::default()
    };
    assert!(!rig.dev.request(Request::SetStatus { status: DRIVER_OK }).0);
    rig.dev.vq_info.lock().expect("info")[0].num = 12;
    assert!(!rig.dev.request(Request::SetStatus { status: DRIVER_OK }).0);
    assert!(rig.dev.kicks.lock().expect("kicks")[0].is_none());
    // Still answering, and a good setup still works.
    assert!(rig.driver_ok(0));
}

#[test]
fn removal_destroys_the_device_once() {
    let mut rig = Rig::new();
    assert!(rig.driver_ok(0));
    assert_eq!(rig.request(T_FLUSH, 0, None), S_OK);
    // Safe removal refuses while a driver is bound.
    let e = rig.export.remove(RemoveMode::Safe).expect_err("in use");
    assert_eq!(e.to_string(), "export 'e0' still in use");
    rig.export.remove(RemoveMode::Hard).expect("hard removal");
    assert_eq!(
        rig.drained
            .recv_timeout(Duration::from_secs(10))
            .expect("drained"),
        "e0"
    );
    assert!(
        rig.drained
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "once"
    );
    assert_eq!(
        *rig.host.destroyed.lock().expect("destroyed"),
        vec!["vd0".to_string()]
    );
    assert_eq!(
        rig.dev.open_handles(),
        0,
        "every handle closed before destroy"
    );
    assert!(rig.dev.kicks.lock().expect("kicks")[0].is_none());
}

#[test]
fn a_failed_queue_setup_leaves_no_device() {
    struct NoVqSetup(StandIn);
    impl super::kernel::VduseHost for NoVqSetup {
        fn create(
            &self,
            spec: &super::kernel::DeviceSpec,
        ) -> Result<Arc<dyn super::kernel::VduseDevice>, super::kernel::KernelError> {
            let mut spec = spec.clone();
            spec.vq_num = 0; // so VQ_SETUP of queue 0 fails
            self.0.create(&spec)
        }
        fn destroy(&self, name: &str) -> Result<(), super::kernel::KernelError> {
            self.0.destroy(name)
        }
    }
    let dir = tempfile::tempdir().expect("dir");
    let img = dir.path().join("img");
    File::create(&img)
        .and_then(|f| f.set_len(IMG))
        .expect("img");
    let thread = IoThread::spawn(IoThreadConfig {
        name: "t-vduse2".into(),
        cpu: None,
        movable: false,
        ring_entries: 64,
        poll_max_ns: 0,
    })
    .expect("iothread");
    let common = ExportCommon {
        id: "e1".into(),
        node: node(&img),
        writable: false,
        writethrough: false,
        iothreads: vec![thread.handle().clone()],
        on_drained: Arc::new(|_: &str| {}),
        stats: crate::stats::ExportStats::new("e1", "disk0"),
    };
    let host = Arc::new(NoVqSetup(StandIn::default()));
    let e = start_with(common, opts(), host.clone())
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .starts_with("failed to create vduse device: VDUSE_VQ_SETUP"),
        "{e}"
    );
    assert!(host.0.devices.lock().expect("devices").is_empty());
    assert_eq!(
        *host.0.destroyed.lock().expect("destroyed"),
        vec!["vd0".to_string()]
    );
}
