//! A small synchronous client on libblkio's Rust core (`blkio` 0.5.1,
//! driver `virtio-blk-vhost-user`): an independent vhost-user-blk
//! frontend, not built on anything ringstor uses.

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

/// Bytes of bounce memory per queue (the largest single request).
pub const QUEUE_BUF: usize = 4 << 20;

/// A connected, started libblkio instance.
pub struct Client {
    pub blkio: Blkio,
    pub queues: Vec<Queue>,
    _region: MemoryRegion,
}

/// One virtqueue with its own part of the shared memory region.
pub struct Queue {
    q: Blkioq,
    buf: usize,
    len: usize,
}

impl Client {
    /// Connects to `sock` asking for `num_queues` queues.
    pub fn connect(
        sock: &Path,
        num_queues: usize,
        read_only: bool,
    ) -> Result<Client, blkio::Error> {
        let mut b = Blkio::new("virtio-blk-vhost-user")?;
        b.set_str("path", &sock.to_string_lossy())?;
        b.set_bool("read-only", read_only)?;
        b.connect()?;
        b.set_i32("num-queues", num_queues as i32)?;
        let started = b.start()?;
        let align = b.get_u64("mem-region-alignment")? as usize;
        let len = (QUEUE_BUF * num_queues).div_ceil(align) * align;
        let region = b.alloc_mem_region(len)?;
        b.map_mem_region(&region)?;
        let queues = started
            .queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| Queue {
                q,
                buf: region.addr + i * QUEUE_BUF,
                len: QUEUE_BUF,
            })
            .collect();
        Ok(Client {
            blkio: b,
            queues,
            _region: region,
        })
    }

    /// `capacity` as the device reports it.
    pub fn capacity(&self) -> u64 {
        self.blkio.get_u64("capacity").expect("capacity")
    }

    /// The logical block size (`request-alignment`).
    pub fn block_size(&self) -> i32 {
        self.blkio
            .get_i32("request-alignment")
            .expect("request-alignment")
    }
}

impl Queue {
    fn wait(&mut self) -> i32 {
        let mut c = [MaybeUninit::<Completion>::uninit()];
        let mut t = Duration::from_secs(20);
        let n = match self.q.do_io(&mut c, 1, Some(&mut t), None) {
            Ok(n) => n,
            // The device went away (a removed export): the request failed.
            Err(e) => return -(e.errno().raw_os_error().max(1)),
        };
        assert_eq!(n, 1, "no completion within 20 s");
        // SAFETY: do_io initialised the first n completions.
        unsafe { c[0].assume_init_read() }.ret
    }

    /// Reads `len` bytes at `offset`; `Err(-errno)` on failure.
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
        assert!(len <= self.len);
        self.q
            .read(offset, self.buf as *mut u8, len, 0, ReqFlags::empty());
        match self.wait() {
            0 => {
                // SAFETY: the region is mapped and the request completed.
                let s = unsafe { std::slice::from_raw_parts(self.buf as *const u8, len) };
                Ok(s.to_vec())
            }
            e => Err(e),
        }
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), i32> {
        assert!(data.len() <= self.len);
        // SAFETY: the region is mapped, writable, and data fits.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.buf as *mut u8, data.len()) };
        self.q.write(
            offset,
            self.buf as *const u8,
            data.len(),
            0,
            ReqFlags::empty(),
        );
        match self.wait() {
            0 => Ok(()),
            e => Err(e),
        }
    }

    pub fn flush(&mut self) -> Result<(), i32> {
        self.q.flush(0, ReqFlags::empty());
        match self.wait() {
            0 => Ok(()),
            e => Err(e),
        }
    }

    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), i32> {
        self.q.discard(offset, len, 0, ReqFlags::empty());
        match self.wait() {
            0 => Ok(()),
            e => Err(e),
        }
    }

    pub fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), i32> {
        let flags = if unmap {
            ReqFlags::empty()
        } else {
            ReqFlags::NO_UNMAP
        };
        self.q.write_zeroes(offset, len, 0, flags);
        match self.wait() {
            0 => Ok(()),
            e => Err(e),
        }
    }
}
