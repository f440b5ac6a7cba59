//! Walking the descriptor chain of a given head, for requests resubmitted
//! from an inflight log (virtio-queue builds chains only from the avail
//! ring). Same rules as virtio-queue's walk: at most `size` descriptors
//! per table, one level of indirection, the walk ends at the first
//! descriptor that cannot be read.

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// `VRING_DESC_F_INDIRECT`.
const F_INDIRECT: u16 = 4;

/// The descriptors of the chain starting at `head` in the table at
/// `table` (`size` entries).
pub fn walk<M: GuestMemory + ?Sized>(
    mem: &M,
    table: GuestAddress,
    size: u16,
    head: u16,
) -> Vec<Descriptor> {
    let mut out = Vec::new();
    let (mut table, mut size, mut next, mut ttl, mut indirect) = (table, size, head, size, false);
    while ttl > 0 && next < size {
        let Some(at) = table.checked_add(u64::from(next) * 16) else {
            break;
        };
        let Ok(raw) = mem.read_obj::<RawDescriptor>(at) else {
            break;
        };
        let d = Descriptor::from(raw);
        if d.flags() & F_INDIRECT != 0 {
            if indirect || d.len() % 16 != 0 || d.len() / 16 > u32::from(u16::MAX) {
                break;
            }
            table = d.addr();
            size = (d.len() / 16) as u16;
            next = 0;
            ttl = size;
            indirect = true;
            continue;
        }
        out.push(d);
        if !d.has_next() {
            break;
        }
        next = d.next();
        ttl -= 1;
    }
    out
}
