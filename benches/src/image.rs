//! The image every file-backed server exports: a fully written (not sparse)
//! file of pseudo-random data, plus page-cache control between servers so
//! each starts from the same state: fully cached for the page-cache
//! scenario, evicted for the O_DIRECT one.

use crate::error::{Context, Result};
use crate::jobs::Qcow2Layout;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

const CHUNK: usize = 1 << 20;

/// Write `mib` MiB of non-zero pseudo-random data to `path` and fsync.
pub fn create(path: &Path, mib: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..mib {
        fill(&mut buf, &mut state);
        f.write_all(&buf)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// xorshift64 fill: incompressible, never all-zero blocks.
fn fill(buf: &mut [u8], state: &mut u64) {
    for word in buf.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
}

/// Read the whole file so it sits in the page cache.
pub fn warm(path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// Write back the file's dirty pages (`sync FILE`).
pub fn sync(path: &Path) -> Result<()> {
    run(Command::new("sync").arg(path), "sync")
}

/// Write back and evict the file's pages (`sync FILE`, then GNU dd's
/// `iflag=nocache count=0`, which is `posix_fadvise(DONTNEED)` on the
/// whole file). Servers with real O_DIRECT bypass the cache anyway; this
/// keeps nbdkit's `cache=none` (fadvise-based) from starting warm.
pub fn evict(path: &Path) -> Result<()> {
    sync(path)?;
    let ifile = format!("if={}", path.display());
    run(
        Command::new("dd").args([ifile.as_str(), "iflag=nocache", "count=0", "status=none"]),
        "dd iflag=nocache",
    )
}

/// A qcow2 image of `size` bytes at `path` (64 KiB clusters), replacing
/// any, its page cache warm. [`Qcow2Layout::Metadata`]: every cluster
/// mapped (`preallocation=metadata`), then written once with `qemu-io`, so
/// reads move real data (of never-written clusters QSD sends hole chunks
/// found by `SEEK_DATA`, which measures hole detection, not the format)
/// and writes overwrite in place. [`Qcow2Layout::Sparse`]: empty.
pub fn create_qcow2(path: &Path, size: u64, layout: Qcow2Layout) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let prealloc = match layout {
        Qcow2Layout::Metadata => "preallocation=metadata",
        Qcow2Layout::Sparse => "preallocation=off",
    };
    let p = path.to_string_lossy().into_owned();
    run(
        Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            prealloc,
            &p,
            &size.to_string(),
        ]),
        "qemu-img create",
    )?;
    if layout == Qcow2Layout::Metadata {
        // One qemu-io write is at most 2 GiB - 512: fill in 1 GiB pieces.
        const PIECE: u64 = 1 << 30;
        let mut io = Command::new("qemu-io");
        io.args(["-f", "qcow2"]);
        let mut off = 0;
        while off < size {
            let len = PIECE.min(size - off);
            io.arg("-c").arg(format!("write -P 0xa5 {off} {len}"));
            off += len;
        }
        io.arg(&p).stdout(std::process::Stdio::null());
        run(&mut io, "qemu-io fill")?;
        // Written back before the run, so writes do not wait on writeback.
        sync(path)?;
    }
    warm(path)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().context(what)?;
    if st.success() {
        Ok(())
    } else {
        Err(crate::error::Error::msg(format!("{what}: {st}")))
    }
}

/// The image's pages mapped into the harness for as long as this lives.
/// This machine kind's DAMON scheme pages out file pages it samples as
/// cold, but only unmapped ones (its filters: anon rejected, unmapped
/// allowed, the rest rejected; see `vmstat.rs`). Mapped, a cached image
/// stays whole while every server is measured on it, alike for all.
pub struct Resident {
    addr: *mut libc::c_void,
    len: usize,
}

impl Resident {
    /// Map all of `path` read-only and fault every page in
    /// (`MAP_POPULATE`, which also reads what is not cached yet).
    pub fn map(path: &Path) -> Result<Resident> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = usize::try_from(f.metadata()?.len())
            .map_err(|_| crate::error::Error::msg("image too large to map"))?;
        if len == 0 {
            return Err(crate::error::Error::msg(format!(
                "{} is empty",
                path.display()
            )));
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only shared mapping of a file we opened; the
        // kernel picks the address, nothing else refers to that range, and
        // the fd may be closed once the mapping exists.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                f.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(crate::error::Error::msg(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(Resident { addr, len })
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no reference
        // into it was ever handed out.
        unsafe {
            libc::munmap(self.addr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_deterministic_and_not_zero() {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        let (mut s1, mut s2) = (1u64, 1u64);
        fill(&mut a, &mut s1);
        fill(&mut b, &mut s2);
        assert_eq!(a, b);
        assert!(a.chunks(512).all(|c| c.iter().any(|&x| x != 0)));
    }

    #[test]
    fn resident_maps_every_page_and_refuses_an_empty_file() {
        let dir = std::env::temp_dir().join(format!("ringstor-resident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (full, empty) = (dir.join("full"), dir.join("empty"));
        std::fs::write(&full, vec![7u8; 64 * 1024]).unwrap();
        std::fs::write(&empty, b"").unwrap();
        let r = Resident::map(&full).unwrap();
        let mut vec = [0u8; 16];
        // SAFETY: `r` maps 16 pages at `r.addr`; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(r.addr, r.len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(vec.iter().all(|v| v & 1 == 1), "{vec:?}");
        assert!(Resident::map(&empty).is_err());
        drop(r);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
