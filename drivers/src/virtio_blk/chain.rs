//! Walking the descriptor chain of a head, for every request: the avail
//! ring is popped with virtio-queue, and the descriptors are read here,
//! through the [`HostMap`] (virtio-queue's own walk reads each one with
//! vm-memory's `read_obj`; see the host map's docs for why not that).
//!
//! The rules are virtio-queue's: at most `size` descriptors per table, one
//! level of indirection (an indirect table's length a multiple of 16 and
//! at most 65535 entries), at most 2^32 bytes in a chain (virtio 1.2
//! §2.7.5.2), and the walk ends at the first descriptor that breaks one or
//! cannot be read, leaving the request parser to refuse what it got.

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use super::hostmap::{read_volatile_bytes, HostMap};

/// `VRING_DESC_F_INDIRECT`.
const F_INDIRECT: u16 = 4;

/// Bytes of a split descriptor.
const DESC_LEN: u64 = 16;

/// The descriptors of one chain, in order.
pub struct Descriptors<'a, M: ?Sized> {
    mem: &'a M,
    host: &'a HostMap,
    table: GuestAddress,
    size: u16,
    next: u16,
    ttl: u16,
    indirect: bool,
    bytes: u32,
}

/// The chain starting at `head` in the descriptor table at `table` (`size`
/// entries) of `mem`, whose host map is `host`.
pub fn walk<'a, M: GuestMemory + ?Sized>(
    mem: &'a M,
    host: &'a HostMap,
    table: GuestAddress,
    size: u16,
    head: u16,
) -> Descriptors<'a, M> {
    Descriptors {
        mem,
        host,
        table,
        size,
        next: head,
        ttl: size,
        indirect: false,
        bytes: 0,
    }
}

impl<M: GuestMemory + ?Sized> Descriptors<'_, M> {
    fn read(&self, at: GuestAddress) -> Option<Descriptor> {
        if let Some(p) = self.host.get(at.0, DESC_LEN) {
            let mut b = [0u8; DESC_LEN as usize];
            // SAFETY: `get` checked that 16 bytes at `p` lie in a region of
            // the map `host` was built from, which the caller holds for
            // the walk (see `HostMap`'s # Safety).
            unsafe { read_volatile_bytes(p, &mut b) };
            let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
            return Some(Descriptor::new(
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
                u16_at(12),
                u16_at(14),
            ));
        }
        self.mem
            .read_obj::<RawDescriptor>(at)
            .ok()
            .map(Descriptor::from)
    }

    /// Ends the walk.
    fn end(&mut self) -> Option<Descriptor> {
        self.ttl = 0;
        None
    }
}

impl<M: GuestMemory + ?Sized> Iterator for Descriptors<'_, M> {
    type Item = Descriptor;

    fn next(&mut self) -> Option<Descriptor> {
        loop {
            if self.ttl == 0 || self.next >= self.size {
                return self.end();
            }
            let Some(at) = self.table.checked_add(u64::from(self.next) * DESC_LEN) else {
                return self.end();
            };
            let Some(d) = self.read(at) else {
                return self.end();
            };
            if d.flags() & F_INDIRECT != 0 {
                if self.indirect || d.len() % 16 != 0 || d.len() / 16 > u32::from(u16::MAX) {
                    return self.end();
                }
                self.table = d.addr();
                self.size = (d.len() / 16) as u16;
                self.next = 0;
                self.ttl = self.size;
                self.indirect = true;
                continue;
            }
            let Some(bytes) = self.bytes.checked_add(d.len()) else {
                return self.end();
            };
            self.bytes = bytes;
            if d.has_next() {
                self.next = d.next();
                self.ttl -= 1;
            } else {
                self.ttl = 0;
            }
            return Some(d);
        }
    }
}
