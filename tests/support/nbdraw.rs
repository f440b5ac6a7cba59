//! A tiny raw-socket NBD client: fixed-newstyle handshake, optional
//! extended headers (`NBD_OPT_EXTENDED_HEADERS`), `NBD_OPT_GO`, and
//! extended READ requests. libnbd 1.14 has no extended headers, so this is
//! what checks them.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const NBDMAGIC: &[u8; 8] = b"NBDMAGIC";
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_EXTENDED_HEADERS: u32 = 11;
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REQUEST_EXT_MAGIC: u32 = 0x21e4_1c71;
pub const REPLY_EXT_MAGIC: u32 = 0x6e8a_278c;
pub const CMD_READ: u16 = 0;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;

/// One option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub rtype: u32,
    pub data: Vec<u8>,
}

/// One extended structured reply chunk.
#[derive(Debug)]
pub struct ExtChunk {
    pub flags: u16,
    pub rtype: u16,
    pub cookie: u64,
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// A raw NBD connection.
pub struct RawNbd {
    pub sock: UnixStream,
    /// Handshake flags the server sent.
    pub server_flags: u16,
    /// Export size and transmission flags after `NBD_OPT_GO`.
    pub size: u64,
    pub tflags: u16,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl RawNbd {
    /// Connect and read the server greeting, waiting at most `timeout`.
    pub fn greet(path: &Path, timeout: Duration) -> std::io::Result<RawNbd> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(timeout))?;
        let mut c = RawNbd {
            sock,
            server_flags: 0,
            size: 0,
            tflags: 0,
        };
        let hello = c.read_n(18)?;
        if &hello[..8] != NBDMAGIC || be_u64(&hello[8..16]) != IHAVEOPT {
            return Err(std::io::Error::other(format!("bad greeting {hello:02x?}")));
        }
        c.server_flags = be_u16(&hello[16..18]);
        // FIXED_NEWSTYLE | NO_ZEROES
        c.sock.write_all(&3u32.to_be_bytes())?;
        c.sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(c)
    }

    fn read_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.sock.read_exact(&mut b)?;
        Ok(b)
    }

    /// Send an option request.
    pub fn send_opt(&mut self, option: u32, data: &[u8]) {
        let mut m = Vec::with_capacity(16 + data.len());
        m.extend_from_slice(&IHAVEOPT.to_be_bytes());
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.sock.write_all(&m).expect("send NBD option");
    }

    /// Read one option reply.
    pub fn read_opt_reply(&mut self) -> OptReply {
        let h = self.read_n(20).expect("read option reply header");
        assert_eq!(be_u64(&h[..8]), OPT_REPLY_MAGIC, "option reply magic");
        let len = be_u32(&h[16..20]) as usize;
        OptReply {
            option: be_u32(&h[8..12]),
            rtype: be_u32(&h[12..16]),
            data: self.read_n(len).expect("read option reply data"),
        }
    }

    /// `NBD_OPT_GO` for `name`; returns every reply up to the final one.
    pub fn go(&mut self, name: &str) -> Vec<OptReply> {
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.send_opt(OPT_GO, &d);
        let mut replies = Vec::new();
        loop {
            let r = self.read_opt_reply();
            if r.rtype == REP_INFO && r.data.len() >= 12 && be_u16(&r.data) == 0 {
                self.size = be_u64(&r.data[2..10]);
                self.tflags = be_u16(&r.data[10..12]);
            }
            let done = r.rtype != REP_INFO;
            replies.push(r);
            if done {
                return replies;
            }
        }
    }

    /// Send an extended (32-byte header) request.
    pub fn send_ext_request(&mut self, flags: u16, ty: u16, cookie: u64, offset: u64, len: u64) {
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&REQUEST_EXT_MAGIC.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&cookie.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        self.sock.write_all(&m).expect("send extended request");
    }

    /// Read one extended reply chunk; panics on a wrong magic.
    pub fn read_ext_chunk(&mut self) -> ExtChunk {
        let h = self.read_n(32).expect("read extended reply header");
        assert_eq!(
            be_u32(&h[..4]),
            REPLY_EXT_MAGIC,
            "extended reply magic, header {h:02x?}"
        );
        let len = be_u64(&h[24..32]) as usize;
        ExtChunk {
            flags: be_u16(&h[4..6]),
            rtype: be_u16(&h[6..8]),
            cookie: be_u64(&h[8..16]),
            offset: be_u64(&h[16..24]),
            payload: self.read_n(len).expect("read extended reply payload"),
        }
    }

    /// Extended READ of `len` bytes at `offset`; reassembles data and hole
    /// chunks. Returns the bytes and the chunks' reply types.
    pub fn ext_read(&mut self, cookie: u64, offset: u64, len: usize) -> (Vec<u8>, Vec<u16>) {
        self.send_ext_request(0, CMD_READ, cookie, offset, len as u64);
        let mut buf = vec![0u8; len];
        let mut types = Vec::new();
        loop {
            let c = self.read_ext_chunk();
            assert_eq!(c.cookie, cookie, "reply cookie echoes request cookie");
            types.push(c.rtype);
            match c.rtype {
                REPLY_TYPE_OFFSET_DATA => {
                    let at = (be_u64(&c.payload) - offset) as usize;
                    let data = &c.payload[8..];
                    buf[at..at + data.len()].copy_from_slice(data);
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let at = (be_u64(&c.payload) - offset) as usize;
                    let n = be_u32(&c.payload[8..12]) as usize;
                    buf[at..at + n].fill(0);
                }
                REPLY_TYPE_NONE => {}
                t => panic!("unexpected reply type {t:#x}: {c:?}"),
            }
            if c.flags & REPLY_FLAG_DONE != 0 {
                return (buf, types);
            }
        }
    }

    /// Polite disconnect (`NBD_CMD_DISC`, extended header).
    pub fn ext_disconnect(&mut self) {
        self.send_ext_request(0, CMD_DISC, 0, 0, 0);
    }
}

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const CMD_WRITE: u16 = 1;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_FLAG_FUA: u16 = 1;

/// How a connection ended when the test expected it might.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// EOF (or ECONNRESET) exactly at a message boundary.
    Boundary,
    /// The peer closed after `n` bytes of a message.
    Partial(usize),
}

impl RawNbd {
    /// Build a simple (28-byte header) request, optionally with a payload.
    pub fn simple_request(flags: u16, ty: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(28);
        m.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&handle.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m
    }

    /// Send a simple request header followed by `payload`.
    pub fn send_simple(
        &mut self,
        flags: u16,
        ty: u16,
        handle: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut m = RawNbd::simple_request(flags, ty, handle, offset, len);
        m.extend_from_slice(payload);
        self.sock.write_all(&m)
    }

    /// Read exactly `buf.len()` bytes, telling a clean close (no byte read)
    /// from a close in the middle.
    pub fn read_or_closed(&mut self, buf: &mut [u8]) -> Result<(), Closed> {
        let mut got = 0;
        while got < buf.len() {
            match self.sock.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read from NBD socket after {got} bytes: {e}"),
            }
        }
        match got {
            n if n == buf.len() => Ok(()),
            0 => Err(Closed::Boundary),
            n => Err(Closed::Partial(n)),
        }
    }

    /// Read a simple reply header: `(error, handle)`, or how the server closed.
    pub fn read_simple_reply(&mut self) -> Result<(u32, u64), Closed> {
        let mut h = [0u8; 16];
        self.read_or_closed(&mut h)?;
        assert_eq!(
            be_u32(&h[..4]),
            SIMPLE_REPLY_MAGIC,
            "simple reply magic, header {h:02x?}"
        );
        Ok((be_u32(&h[4..8]), be_u64(&h[8..16])))
    }

    /// Simple READ (no structured replies negotiated): data or the error.
    pub fn read_at(&mut self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.send_simple(0, CMD_READ, handle, offset, len, &[])
            .expect("send READ");
        let (err, h) = self.read_simple_reply().expect("READ reply");
        assert_eq!(h, handle, "reply handle");
        if err != 0 {
            return Err(err);
        }
        let mut data = vec![0; len as usize];
        self.sock.read_exact(&mut data).expect("READ payload");
        Ok(data)
    }

    /// Simple WRITE with `flags`; returns the reply's error (0 = success).
    pub fn write_at(&mut self, handle: u64, offset: u64, data: &[u8], flags: u16) -> u32 {
        self.send_simple(flags, CMD_WRITE, handle, offset, data.len() as u32, data)
            .expect("send WRITE");
        let (err, h) = self.read_simple_reply().expect("WRITE reply");
        assert_eq!(h, handle, "reply handle");
        err
    }

    /// Polite disconnect with a simple header.
    pub fn disconnect(&mut self) {
        let _ = self.send_simple(0, CMD_DISC, 0, 0, 0, &[]);
    }

    /// Wait up to `timeout` for the server to close; true if it did.
    /// Anything the server sends first is discarded.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sock
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.sock.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read from NBD socket: {e}"),
            }
        }
    }
}
