//! Parsing chains built with virtio-queue's mock rings in real guest-memory
//! maps: good requests, and each malformed shape a hostile driver may send.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};

use super::hostmap::HostMap;
use super::request::{self, Reason, Rejected, Request, RequestKind};
use super::spec::{SEG_MAX, S_IOERR, S_UNSUPP, T_IN, T_OUT};

const WRITE: u16 = 2; // VRING_DESC_F_WRITE

/// Parses `chain` of `q` as the queue does (our walk of its table, the host
/// map), in a clone of the chain's map (the clone shares its mappings).
fn parse(
    q: &MockSplitQueue<GuestMemoryMmap>,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<Request<GuestMemoryMmap>, Rejected> {
    let mem = Arc::new(chain.memory().clone());
    let host = HostMap::new(&*mem);
    let size = q.create_queue::<Queue>().expect("queue").size();
    request::parse(&mem, &host, q.desc_table_addr(), size, chain.head_index())
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).expect("guest memory")
}

/// Two regions of 1 MiB, adjacent in guest-physical space but mapped apart.
fn two_regions() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .expect("guest memory")
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
    let r = parse(&q, chain).expect("parses");
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
    let r = parse(&q, chain).expect("parses");
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
    let e = parse(&q, chain).expect_err("refused");
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
    let e = parse(&q, chain).expect_err("refused");
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
    let e = parse(&q, chain).expect_err("refused");
    assert_eq!(e.code, S_UNSUPP);
    assert_eq!(e.reason, Reason::Unsupported(99));

    let q = MockSplitQueue::new(&m, 16);
    let chain = q
        .build_desc_chain(&[d(0x10_0000, 8, 0), d(0x12_0000, 1, WRITE)])
        .expect("chain");
    assert_eq!(
        parse(&q, chain).expect_err("refused").reason,
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
    let e = parse(&q, q.build_desc_chain(&descs).expect("chain")).expect_err("refused");
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
    assert_eq!(
        parse(&q, chain).expect_err("refused").reason,
        Reason::Direction
    );

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
    assert_eq!(parse(&q, chain).expect_err("refused").reason, Reason::Order);
}

#[test]
fn data_across_regions_is_translated_once_into_host_iovecs() {
    let m = two_regions();
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
    let r = parse(&q, chain).expect("parses");
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

#[test]
fn without_a_host_map_the_same_chain_parses_through_vm_memory() {
    let m = two_regions();
    let q = MockSplitQueue::new(&m, 16);
    header(&m, 0x8_0000, T_OUT, 24);
    let chain = q
        .build_desc_chain(&[
            d(0x8_0000, 8, 0),
            // The header's second half, then 4 KiB, across the regions.
            d(0x10_0000 - 2048 - 8, 4096 + 8, 0),
            d(0x12_0000, 1, WRITE),
        ])
        .expect("chain");
    m.write_slice(&[0u8; 8], GuestAddress(0x10_0000 - 2048 - 8))
        .expect("header half");
    let mem = Arc::new(m.clone());
    let fast = request::parse(&mem, &HostMap::new(&*mem), q.desc_table_addr(), 16, 0);
    let slow = request::parse(&mem, &HostMap::default(), q.desc_table_addr(), 16, 0);
    let (fast, slow) = (fast.expect("parses"), slow.expect("parses"));
    assert_eq!(chain.head_index(), 0);
    assert_eq!(fast.data, slow.data);
    assert_eq!(
        (fast.sector, slow.sector),
        (0, 0),
        "second header half zero"
    );
    assert_eq!(
        engine::buf::IoVecBuf::iovecs(&fast.bufs).len(),
        engine::buf::IoVecBuf::iovecs(&slow.bufs).len()
    );
    assert_eq!(fast.data_len, 4096);
}

/// Writes raw descriptors into the table of `q` at `at`.
fn table(q: &MockSplitQueue<GuestMemoryMmap>, descs: &[(u16, SplitDescriptor)]) {
    for &(at, desc) in descs {
        q.desc_table()
            .store(at, RawDescriptor::from(desc))
            .expect("descriptor");
    }
}

const NEXT: u16 = 1; // VRING_DESC_F_NEXT
const INDIRECT: u16 = 4; // VRING_DESC_F_INDIRECT

fn walked(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, head: u16) -> Vec<u64> {
    let host = HostMap::new(m);
    super::chain::walk(m, &host, q.desc_table_addr(), 16, head)
        .map(|d| d.addr().0)
        .collect()
}

#[test]
fn walk_ends_loops_nested_indirection_and_oversized_chains() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    // A loop 0 -> 1 -> 0: at most the table's size of descriptors.
    table(
        &q,
        &[
            (0, SplitDescriptor::new(0x10_0000, 16, NEXT, 1)),
            (1, SplitDescriptor::new(0x11_0000, 16, NEXT, 0)),
        ],
    );
    assert_eq!(walked(&m, &q, 0).len(), 16);
    // A next outside the table ends the walk after the descriptor.
    table(&q, &[(2, SplitDescriptor::new(0x12_0000, 16, NEXT, 99))]);
    assert_eq!(walked(&m, &q, 2), [0x12_0000]);
    // An indirect table of two, the second one pointing to another
    // indirect table: the walk stops there.
    let ind = 0x18_0000u64;
    table(&q, &[(3, SplitDescriptor::new(ind, 32, INDIRECT, 0))]);
    let raw = |d: SplitDescriptor| RawDescriptor::from(d);
    m.write_obj(
        raw(SplitDescriptor::new(0x13_0000, 16, NEXT, 1)),
        GuestAddress(ind),
    )
    .expect("indirect 0");
    m.write_obj(
        raw(SplitDescriptor::new(0x19_0000, 16, INDIRECT, 0)),
        GuestAddress(ind + 16),
    )
    .expect("indirect 1");
    assert_eq!(walked(&m, &q, 3), [0x13_0000]);
    // An indirect table whose length is not a multiple of 16: nothing.
    table(&q, &[(4, SplitDescriptor::new(ind, 24, INDIRECT, 0))]);
    assert!(walked(&m, &q, 4).is_empty());
    // Past 2^32 bytes in a chain the walk ends.
    table(
        &q,
        &[
            (5, SplitDescriptor::new(0x10_0000, u32::MAX, NEXT, 6)),
            (6, SplitDescriptor::new(0x11_0000, 1, 0, 0)),
        ],
    );
    assert_eq!(walked(&m, &q, 5), [0x10_0000]);
    // A table outside guest memory: nothing.
    let host = HostMap::new(&m);
    assert_eq!(
        super::chain::walk(&m, &host, GuestAddress(0x4000_0000), 16, 0).count(),
        0
    );
}
