//! Parsing chains built with virtio-queue's mock rings in real guest-memory
//! maps: good requests, and each malformed shape a hostile driver may send.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use std::sync::Arc;

use virtio_queue::DescriptorChain;

use super::request::{self, Reason, Rejected, Request, RequestKind};
use super::spec::{SEG_MAX, S_IOERR, S_UNSUPP, T_IN, T_OUT};

const WRITE: u16 = 2; // VRING_DESC_F_WRITE

/// Parses in a clone of the chain's map (the clone shares its mappings).
fn parse(chain: DescriptorChain<&GuestMemoryMmap>) -> Result<Request<GuestMemoryMmap>, Rejected> {
    let mem = Arc::new(chain.memory().clone());
    request::parse(chain, &mem)
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).expect("guest memory")
}

fn header(mem: &GuestMemoryMmap, at: u64, t: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).expect("header");
}

fn d(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

#[test]
fn read_request_parses() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x10_0000, T_IN, 8);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 16, 0),
            d(0x11_0000, 4096, WRITE),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    let r = parse(chain).expect("parses");
    assert_eq!(r.kind, RequestKind::Read);
    assert_eq!(r.sector, 8);
    assert_eq!(r.data_len, 4096);
    assert_eq!(r.status, GuestAddress(0x12_0000));
}

#[test]
fn header_split_across_descriptors_and_status_in_data() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x10_0000, T_OUT, 16);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 10, 0),
            d(0x10_000a, 6 + 512, 0),
            // Status is the last byte of the only writable descriptor.
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    let r = parse(chain).expect("parses");
    assert_eq!(r.kind, RequestKind::Write);
    assert_eq!(r.sector, 16);
    assert_eq!(r.data_len, 512);
    assert_eq!(r.data[0].addr, GuestAddress(0x10_0010));
}

#[test]
fn missing_status_is_refused_without_status() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x10_0000, T_OUT, 0);
    let chain = q
        .build_desc_chain(&[d(0x10_0000, 16, 0), d(0x11_0000, 512, 0)])
        .expect("chain");
    let e = parse(chain).expect_err("refused");
    assert_eq!(e.reason, Reason::NoStatus);
    assert_eq!(e.status, None);
}

#[test]
fn descriptor_outside_memory_is_ioerr() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x10_0000, T_IN, 0);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 16, 0),
            d(0x4000_0000, 4096, WRITE),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    let e = parse(chain).expect_err("refused");
    assert_eq!(e.reason, Reason::BadAddress);
    assert_eq!(e.code, S_IOERR);
    assert_eq!(e.status, Some(GuestAddress(0x12_0000)));
}

#[test]
fn unknown_type_is_unsupp_and_short_header_ioerr() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x10_0000, 99, 0);
    let chain = q
        .build_desc_chain(&[d(0x10_0000, 16, 0), d(0x12_0000, 1, WRITE)])
        .expect("chain");
    let e = parse(chain).expect_err("refused");
    assert_eq!(e.code, S_UNSUPP);
    assert_eq!(e.reason, Reason::Unsupported(99));

    let q = MockSplitQueue::new(&m, 16);
    let chain = q
        .build_desc_chain(&[d(0x10_0000, 8, 0), d(0x12_0000, 1, WRITE)])
        .expect("chain");
    assert_eq!(
        parse(chain).expect_err("refused").reason,
        Reason::ShortHeader
    );
}

#[test]
fn too_many_segments_and_wrong_direction() {
    let m = mem();
    let n = SEG_MAX as usize + 1;
    let q = MockSplitQueue::new(&m, 256);
    header(&m, 0x10_0000, T_OUT, 0);
    let mut descs = vec![d(0x10_0000, 16, 0)];
    for i in 0..n {
        descs.push(d(0x11_0000 + 512 * i as u64, 512, 0));
    }
    descs.push(d(0x1f_0000, 1, WRITE));
    let e = parse(q.build_desc_chain(&descs).expect("chain")).expect_err("refused");
    assert_eq!(e.reason, Reason::TooManySegments);

    // A write whose data is device-writable.
    let q = MockSplitQueue::new(&m, 16);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 16, 0),
            d(0x11_0000, 512, WRITE),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    assert_eq!(parse(chain).expect_err("refused").reason, Reason::Direction);

    // Readable after writable.
    let q = MockSplitQueue::new(&m, 16);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 16, 0),
            d(0x11_0000, 512, WRITE),
            d(0x11_1000, 512, 0),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    assert_eq!(parse(chain).expect_err("refused").reason, Reason::Order);
}

#[test]
fn data_across_regions_is_translated_once_into_host_iovecs() {
    // Two regions, adjacent in guest-physical space but mapped apart.
    let m = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .expect("guest memory");
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x8_0000, T_IN, 0);
    let chain = q
        .build_desc_chain(&[
            d(0x8_0000, 16, 0),
            // 4 KiB of read data, half in each region.
            d(0x10_0000 - 2048, 4096, WRITE),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    let r = parse(chain).expect("parses");
    assert_eq!(r.data_len, 4096);
    // One descriptor, two pieces: seg_max counts descriptors.
    assert_eq!(r.data.len(), 2);
    let iov = engine::buf::IoVecBuf::iovecs(&r.bufs);
    assert_eq!(iov.len(), 2);
    assert_eq!((iov[0].iov_len, iov[1].iov_len), (2048, 2048));
    // The iovecs are where the guest addresses are mapped.
    m.write_slice(&[0xA5], GuestAddress(0x10_0000 - 2048))
        .expect("write");
    m.write_slice(&[0x5A], GuestAddress(0x10_0000))
        .expect("write");
    // SAFETY: both point at the first byte of a live mapping of `m`'s regions
    // (the parse's map shares them), read by volatile loads.
    let (a, b) = unsafe {
        (
            std::ptr::read_volatile(iov[0].iov_base.cast::<u8>()),
            std::ptr::read_volatile(iov[1].iov_base.cast::<u8>()),
        )
    };
    assert_eq!((a, b), (0xA5, 0x5A));
}
