//! Cost of marking a dirty bitmap, per write, for the two designs the
//! engine could use: one shared bitmap of atomic words that every iothread
//! ORs into (what `engine::block::bitmap` does), or one private shard per
//! iothread (merged when read). Each simulated write marks twice, as the
//! handles do (before submitting, before acknowledging).
//!
//! `cargo run --release -p ringstor-engine --example bitmap_mark [THREADS]`
//! (run it under `/work/bin/quiet` on a shared machine).

use std::sync::Arc;
use std::time::Instant;

use engine::block::DirtyBitmap;

const SIZE: u64 = 2 << 40; // 2 TiB node
const GRAN: u64 = 64 << 10; // 64 KiB granules: 32 Mi bits, 4 MiB of words
const WRITES: u64 = 20_000_000;

#[derive(Clone, Copy)]
enum Pattern {
    /// Random 4 KiB writes in the first 64 GiB (hot: bits soon all set).
    Random,
    /// Thread i of n writes granule k*n + i: every write dirties a new
    /// bit, and the threads share every word (the worst case).
    Stride,
}

fn marks(b: &DirtyBitmap, p: Pattern, thread: u64, threads: u64, n: u64) {
    let mut x = (0x9E37_79B9 * (thread + 1)) | 1;
    for k in 0..n {
        let off = match p {
            Pattern::Random => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % ((64 << 30) / 4096)) * 4096
            }
            Pattern::Stride => (k * threads + thread) * GRAN,
        };
        b.set(off, 4096);
        b.set(off, 4096);
    }
}

fn run(label: &str, p: Pattern, threads: u64, bitmaps: &[Arc<DirtyBitmap>]) {
    let per = WRITES / threads;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let b = bitmaps[(i as usize) % bitmaps.len()].clone();
            s.spawn(move || marks(&b, p, i, threads, per));
        }
    });
    // Wall time per write of one thread: what a write pays.
    let ns = t0.elapsed().as_nanos() as f64 / per as f64;
    println!("{label:<48} {ns:6.1} ns per write");
}

fn main() {
    let threads: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let fresh = || Arc::new(DirtyBitmap::new(SIZE, GRAN).expect("bitmap"));
    println!("{threads} threads, {WRITES} 4 KiB writes in all, 64 KiB granules, two marks each");
    for (name, p) in [("random", Pattern::Random), ("stride", Pattern::Stride)] {
        let shared = fresh();
        run(
            &format!("shared atomic bitmap, {name}"),
            p,
            threads,
            std::slice::from_ref(&shared),
        );
        run(
            &format!("shared atomic bitmap, {name}, again (dirty)"),
            p,
            threads,
            &[shared],
        );
        let shards: Vec<_> = (0..threads).map(|_| fresh()).collect();
        run(
            &format!("one shard per thread, {name}"),
            p,
            threads,
            &shards,
        );
    }
}
