//! A hostile vhost-user-blk frontend, built on `vhost`'s frontend side with
//! hand-written descriptor tables in a memfd it shares as guest memory:
//! bad descriptors, sectors past the end, a missing status byte, a chain
//! longer than SEG_MAX, an unknown type, and finally an avail index that
//! jumps. Each is answered (or the queue stopped) while a libblkio client
//! on another export of the same daemon keeps being served.

use crate::blkio_client::Client;
use ringstor_tests::*;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::eventfd::EventFd;

const MIB: u64 = 1 << 20;
const QSIZE: u16 = 256;
const MEM: u64 = 2 * MIB;
const DESC: u64 = 0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const STATUS: u64 = 0x8000;
const HDR: u64 = 0x9000;
const DATA: u64 = 0x10_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

struct Hostile {
    fe: Frontend,
    mem: GuestMemoryMmap,
    kick: EventFd,
    _call: EventFd,
    avail_idx: u16,
    used_seen: u16,
}

impl Hostile {
    fn connect(sock: &Path) -> Hostile {
        let fd = nix::sys::memfd::memfd_create(c"hostile", nix::sys::memfd::MFdFlags::empty())
            .expect("memfd");
        let file = File::from(fd);
        file.set_len(MEM).expect("size memfd");
        let raw = file.as_raw_fd();
        let mapping = MmapRegionBuilder::new(MEM as usize)
            .with_file_offset(FileOffset::new(file.try_clone().expect("dup"), 0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .expect("mmap");
        let host = mapping.as_ptr() as u64;
        let region = GuestRegionMmap::new(mapping, GuestAddress(0)).expect("region");
        let mem = GuestMemoryMmap::from_regions(vec![region]).expect("memory");
        let mut fe = Frontend::connect(sock, 1).expect("frontend connects");
        fe.set_owner().expect("SET_OWNER");
        let features = fe.get_features().expect("GET_FEATURES");
        assert_ne!(features & (1 << 30), 0, "protocol features offered");
        // No EVENT_IDX: every completion is signalled, and we poll anyway.
        fe.set_features(features & !(1 << 29))
            .expect("SET_FEATURES");
        let pf = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        for f in [
            VhostUserProtocolFeatures::CONFIG,
            VhostUserProtocolFeatures::MQ,
            VhostUserProtocolFeatures::REPLY_ACK,
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
            VhostUserProtocolFeatures::INFLIGHT_SHMFD,
            VhostUserProtocolFeatures::STATUS,
        ] {
            assert!(pf.contains(f), "protocol feature {f:?} offered");
        }
        fe.set_protocol_features(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ)
            .expect("SET_PROTOCOL_FEATURES");
        let mut seg_max = [0u8; 4];
        let (_, got) = fe
            .get_config(12, 4, VhostUserConfigFlags::WRITABLE, &seg_max)
            .expect("GET_CONFIG");
        seg_max.copy_from_slice(&got);
        assert_eq!(u32::from_le_bytes(seg_max), 126, "seg_max");
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM,
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: raw,
        }])
        .expect("SET_MEM_TABLE");
        fe.set_vring_num(0, QSIZE).expect("SET_VRING_NUM");
        fe.set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: host + DESC,
                used_ring_addr: host + USED,
                avail_ring_addr: host + AVAIL,
                log_addr: None,
            },
        )
        .expect("SET_VRING_ADDR");
        fe.set_vring_base(0, 0).expect("SET_VRING_BASE");
        let call = EventFd::new(libc::EFD_NONBLOCK).expect("call eventfd");
        let kick = EventFd::new(libc::EFD_NONBLOCK).expect("kick eventfd");
        fe.set_vring_call(0, &call).expect("SET_VRING_CALL");
        fe.set_vring_kick(0, &kick).expect("SET_VRING_KICK");
        fe.set_vring_enable(0, true).expect("SET_VRING_ENABLE");
        Hostile {
            fe,
            mem,
            kick,
            _call: call,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16) {
        let at = GuestAddress(DESC + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&(i + 1).to_le_bytes());
        self.mem.write_slice(&d, at).expect("descriptor");
    }

    /// Writes a chain of `(addr, len, writable)` starting at descriptor 0,
    /// publishes it, kicks, and waits for its used entry: (len, status).
    fn submit(&mut self, chain: &[(u64, u32, bool)]) -> (u32, u8) {
        for (i, &(addr, len, w)) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.desc(i as u16, addr, len, flags);
        }
        self.mem
            .write_obj(0xffu8, GuestAddress(STATUS))
            .expect("status");
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(0u16, GuestAddress(slot))
            .expect("avail slot");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .expect("avail idx");
        self.kick.write(1).expect("kick");
        let used = self
            .wait_used(Duration::from_secs(10))
            .expect("a used entry");
        let status = self
            .mem
            .read_obj::<u8>(GuestAddress(STATUS))
            .expect("status");
        (used, status)
    }

    /// Waits for the next used entry; returns its length.
    fn wait_used(&mut self, limit: Duration) -> Option<u32> {
        let deadline = Instant::now() + limit;
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).expect("used idx");
            if idx != self.used_seen {
                let e = USED + 4 + 8 * u64::from(self.used_seen % QSIZE);
                self.used_seen = self.used_seen.wrapping_add(1);
                return Some(
                    self.mem
                        .read_obj::<u32>(GuestAddress(e + 4))
                        .expect("used len"),
                );
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn header(&self, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).expect("header");
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(DATA))
            .expect("data");
        v
    }
}

#[test]
fn hostile_frontend_is_answered_while_a_good_client_is_served() {
    let dir = scratch();
    make_filled(&dir.path().join("a.img"), 4 * MIB, 11);
    make_filled(&dir.path().join("b.img"), 4 * MIB, 12);
    let d = Daemon::start(
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=a,filename={dir}/a.img",
            "--blockdev",
            "driver=file,node-name=b,filename={dir}/b.img",
            "--object",
            "iothread,id=io0",
            "--export",
            "type=vhost-user-blk,id=bad,node-name=a,addr.type=unix,addr.path={dir}/bad.sock,writable=on,num-queues=1,iothread=io0",
            "--export",
            "type=vhost-user-blk,id=good,node-name=b,addr.type=unix,addr.path={dir}/good.sock,writable=on,num-queues=1,iothread=io0",
        ],
    );
    let a_img = d.path("a.img");
    let original = read_region(&a_img, 0, 4 * MIB as usize);
    // The good client works throughout, on the same iothread.
    let stop = Arc::new(AtomicBool::new(false));
    let good_sock = d.path("good.sock");
    let st = stop.clone();
    let good = std::thread::spawn(move || {
        let mut c = Client::connect(&good_sock, 1, false).expect("good client connects");
        let mut rounds = 0u64;
        while !st.load(Ordering::Relaxed) {
            let data = pattern(4096, 500 + rounds);
            let off = (rounds % 512) * 4096;
            c.queues[0].write(off, &data).expect("good write");
            assert_eq!(c.queues[0].read(off, 4096).expect("good read"), data);
            rounds += 1;
        }
        rounds
    });

    let mut h = Hostile::connect(&d.path("bad.sock"));
    let hdr = (HDR, 16, false);
    let status = (STATUS, 1, true);
    // A good read first.
    h.header(0, 8);
    assert_eq!(h.submit(&[hdr, (DATA, 4096, true), status]), (4097, S_OK));
    assert_eq!(h.data(4096), original[4096..8192]);
    // A data buffer outside guest memory.
    h.header(0, 8);
    assert_eq!(
        h.submit(&[hdr, (0x4000_0000, 4096, true), status]),
        (1, S_IOERR)
    );
    // A buffer that starts inside guest memory and runs past its end.
    h.header(0, 8);
    assert_eq!(
        h.submit(&[hdr, (MEM - 512, 4096, true), status]),
        (1, S_IOERR)
    );
    // Sectors past the end of the device, and a length that overflows it.
    h.header(0, 8190);
    assert_eq!(h.submit(&[hdr, (DATA, 4096, true), status]), (1, S_IOERR));
    h.header(0, u64::MAX / 256);
    assert_eq!(h.submit(&[hdr, (DATA, 512, true), status]), (1, S_IOERR));
    // A write with no device-writable byte: nowhere to put a status.
    h.header(1, 0);
    h.mem
        .write_slice(&[0xee; 512], GuestAddress(DATA))
        .expect("data");
    assert_eq!(h.submit(&[hdr, (DATA, 512, false)]).0, 0);
    // A write longer than SEG_MAX (126) data segments.
    h.header(1, 0);
    let mut long = vec![hdr];
    long.extend((0..127).map(|i| (DATA + 512 * i, 512, false)));
    long.push(status);
    assert_eq!(h.submit(&long), (1, S_IOERR));
    // An unknown request type, and a header cut short.
    h.header(99, 0);
    assert_eq!(h.submit(&[hdr, status]), (1, S_UNSUPP));
    assert_eq!(h.submit(&[(HDR, 8, false), status]), (1, S_IOERR));
    // A write that is not a multiple of 512 bytes.
    h.header(1, 0);
    assert_eq!(h.submit(&[hdr, (DATA, 100, false), status]), (1, S_IOERR));
    // None of the refused writes reached the image; a good write does.
    assert_eq!(read_region(&a_img, 0, 4 * MIB as usize), original);
    h.header(1, 16);
    h.mem
        .write_slice(&pattern(512, 3), GuestAddress(DATA))
        .expect("data");
    assert_eq!(h.submit(&[hdr, (DATA, 512, false), status]), (1, S_OK));
    assert_eq!(read_region(&a_img, 16 * 512, 512), pattern(512, 3));

    // An avail index that jumps by more than the queue size: the queue
    // stops ("needs reset"), nothing more is completed on it.
    h.avail_idx = h.avail_idx.wrapping_add(1000);
    h.mem
        .write_obj(h.avail_idx, GuestAddress(AVAIL + 2))
        .expect("avail idx");
    h.kick.write(1).expect("kick");
    assert_eq!(h.wait_used(Duration::from_millis(500)), None);
    let _ = &h.fe;

    stop.store(true, Ordering::Relaxed);
    let rounds = good.join().expect("good client thread");
    assert!(rounds > 0, "the good client was served");
    // One log line per queue for refused requests, one for the broken ring.
    let log = d.stderr();
    assert_eq!(
        log.matches("further refusals on this queue are not logged")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("queue stopped until the driver resets it"),
        "{log}"
    );
    // The hostile frontend goes; the export takes the next one.
    drop(h);
    let mut c = Client::connect(&d.path("bad.sock"), 1, false).expect("next frontend");
    assert_eq!(
        c.queues[0].read(16 * 512, 512).expect("read"),
        pattern(512, 3)
    );
}
