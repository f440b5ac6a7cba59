//! Reply encoding: `fuse_out_header` and the small reply structures; read
//! data stays in its buffer and goes out beside the header.
#![forbid(unsafe_code)]

use engine::buf::Buf;

/// `sizeof(struct fuse_out_header)`.
pub const OUT_HEADER_LEN: usize = 16;

/// Largest fixed reply body (`fuse_attr_out`).
const MAX_SMALL: usize = 104;

/// The attributes of the exported file (`struct fuse_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// atime = mtime = ctime, seconds.
    pub time: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}

/// A reply body.
#[derive(Debug)]
pub enum ReplyBody {
    /// Header only.
    Empty,
    /// A fixed structure (attr, open, write, lseek, statfs out).
    Small { bytes: [u8; MAX_SMALL], len: usize },
    /// Read data: the first `len` bytes of the buffer.
    Data(Buf, usize),
}

/// What to send back for one request: an errno (0 for success) and a body,
/// or nothing at all (FORGET, INTERRUPT).
#[derive(Debug)]
pub enum Reply {
    None,
    Send { error: i32, body: ReplyBody },
}

struct Small {
    bytes: [u8; MAX_SMALL],
    len: usize,
}

impl Small {
    fn new() -> Small {
        Small {
            bytes: [0; MAX_SMALL],
            len: 0,
        }
    }
    fn u32(mut self, v: u32) -> Small {
        self.bytes[self.len..self.len + 4].copy_from_slice(&v.to_ne_bytes());
        self.len += 4;
        self
    }
    fn u64(mut self, v: u64) -> Small {
        self.bytes[self.len..self.len + 8].copy_from_slice(&v.to_ne_bytes());
        self.len += 8;
        self
    }
    fn done(self) -> Reply {
        Reply::Send {
            error: 0,
            body: ReplyBody::Small {
                bytes: self.bytes,
                len: self.len,
            },
        }
    }
}

impl Reply {
    /// An error reply (`errno` positive).
    pub fn error(errno: i32) -> Reply {
        Reply::Send {
            error: -errno.abs(),
            body: ReplyBody::Empty,
        }
    }

    /// Success without a body.
    pub fn ok() -> Reply {
        Reply::Send {
            error: 0,
            body: ReplyBody::Empty,
        }
    }

    /// `fuse_attr_out` valid for `valid_s` seconds.
    pub fn attr(a: &Attr, valid_s: u64) -> Reply {
        Small::new()
            .u64(valid_s) // attr_valid
            .u32(0) // attr_valid_nsec
            .u32(0) // dummy
            .u64(a.ino)
            .u64(a.size)
            .u64(a.blocks)
            .u64(a.time) // atime
            .u64(a.time) // mtime
            .u64(a.time) // ctime
            .u32(0) // atimensec
            .u32(0) // mtimensec
            .u32(0) // ctimensec
            .u32(a.mode)
            .u32(a.nlink)
            .u32(a.uid)
            .u32(a.gid)
            .u32(0) // rdev
            .u32(a.blksize)
            .u32(0) // flags
            .done()
    }

    /// `fuse_open_out`.
    pub fn open(fh: u64, open_flags: u32) -> Reply {
        Small::new().u64(fh).u32(open_flags).u32(0).done()
    }

    /// `fuse_write_out`.
    pub fn written(size: u32) -> Reply {
        Small::new().u32(size).u32(0).done()
    }

    /// `fuse_lseek_out`.
    pub fn lseek(offset: u64) -> Reply {
        Small::new().u64(offset).done()
    }

    /// `fuse_statfs_out` with libfuse's answer for file systems without
    /// statfs: 512-byte blocks, names up to 255 bytes, nothing counted.
    pub fn statfs_default() -> Reply {
        Small::new()
            .u64(0) // blocks
            .u64(0) // bfree
            .u64(0) // bavail
            .u64(0) // files
            .u64(0) // ffree
            .u32(512) // bsize
            .u32(255) // namelen
            .u32(512) // frsize
            .u32(0) // padding
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0) // spare[6]
            .done()
    }

    /// Read data: `len` bytes of `buf`.
    pub fn data(buf: Buf, len: usize) -> Reply {
        Reply::Send {
            error: 0,
            body: ReplyBody::Data(buf, len),
        }
    }
}

impl ReplyBody {
    /// Bytes of the body.
    pub fn len(&self) -> usize {
        match self {
            ReplyBody::Empty => 0,
            ReplyBody::Small { len, .. } => *len,
            ReplyBody::Data(_, len) => *len,
        }
    }

    /// True without a body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fixed structure's bytes (empty for data and no body).
    pub fn small(&self) -> &[u8] {
        match self {
            ReplyBody::Small { bytes, len } => &bytes[..*len],
            _ => &[],
        }
    }
}

/// `fuse_out_header` for a reply of `body_len` bytes after the header.
pub fn out_header(unique: u64, error: i32, body_len: usize) -> [u8; OUT_HEADER_LEN] {
    let mut h = [0u8; OUT_HEADER_LEN];
    let len = (OUT_HEADER_LEN + body_len) as u32;
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}
