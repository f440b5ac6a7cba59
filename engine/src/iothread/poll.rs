//! Busy-polling while it pays: whether an idle iothread spins before it parks.
//!
//! A spin of up to `poll-max-ns` saves a park and a wake-up per round trip
//! when the next request comes soon; on an idle or lightly loaded thread it
//! only burns the core. So the thread spins while spins find work, and
//! stops after [`MISS_LIMIT`] spins in a row ran out empty. While stopped,
//! it spins again on every [`PROBE_EVERY`]th wait, so a load that came
//! back turns polling on again; an idle export, which never wakes, costs
//! nothing.
//!
//! QEMU's iothreads grow and shrink the spin time from how long each wait
//! lasted (`block_ns`, spinning and parking together; `poll-grow`,
//! `poll-shrink`). We accept those properties with QEMU's checks (in
//! `control`) but do not follow that rule: a parked thread's wait includes its wake-up, and
//! waking a parked vCPU here takes tens of µs, so after one long wait the
//! measured waits never fit in `poll-max-ns` again and polling stays off
//! under a load that would pay. Measured in one quiet run
//! (benches/results/poll-pays-2026-12-02), 4k random reads: one
//! vhost-user-blk queue qd1 20.0k IOPS with QEMU's rule, 46.1k with this
//! one (qd32 195k, 245k); NBD qd1 17.3k, 30.6k.
//!
//! Spinning also stops while the core is contended. A spin whose clock
//! reads jump by more than [`PREEMPT_GAP`] lost its CPU; once
//! [`GAP_LIMIT`] spins in a row did, another task on this core wants it
//! (each spin yields, and a CPU hog then runs its time slice), and would
//! wait behind us for every spin. Polling is then off for a back-off that
//! doubles while the next try still loses the CPU (up to [`MAX_BACKOFF`])
//! and resets once a spin runs undisturbed. A single gap is not enough: a
//! vCPU here loses its CPU to the host or an interrupt tens of times a
//! second, and backing off for each halved the polls under a plain qd1
//! load.

use std::time::{Duration, Instant};

/// Two clock reads of one spin this far apart mean the thread lost its CPU.
pub(crate) const PREEMPT_GAP: Duration = Duration::from_micros(20);
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Spins in a row that lost the CPU before polling backs off.
const GAP_LIMIT: u32 = 3;
/// Empty spins in a row after which polling stops.
const MISS_LIMIT: u32 = 16;
/// While polling is stopped, one wait in this many probes with a spin.
const PROBE_EVERY: u32 = 16;

/// The polling state of one iothread.
pub(crate) struct AdaptivePoll {
    budget: Duration,
    /// Spins in a row that found nothing.
    misses: u32,
    /// Waits since the last probe while polling is stopped.
    waits: u32,
    /// Spins in a row that lost the CPU.
    gaps: u32,
    /// No polling before this instant (the core was contended).
    off_until: Option<Instant>,
    backoff: Duration,
}

impl AdaptivePoll {
    /// Polling that spins up to `max_ns` (`poll-max-ns`; 0 never polls).
    pub(crate) fn new(max_ns: u64) -> AdaptivePoll {
        AdaptivePoll {
            budget: Duration::from_nanos(max_ns),
            misses: 0,
            waits: 0,
            gaps: 0,
            off_until: None,
            backoff: MIN_BACKOFF,
        }
    }

    /// How long to spin now, before a wait for work.
    pub(crate) fn budget(&mut self, now: Instant) -> Duration {
        if let Some(t) = self.off_until {
            if now < t {
                return Duration::ZERO;
            }
            self.off_until = None;
        }
        if self.misses >= MISS_LIMIT {
            self.waits += 1;
            if self.waits < PROBE_EVERY {
                return Duration::ZERO;
            }
            self.waits = 0;
        }
        self.budget
    }

    /// A spin ended: it `found` work or not, and was `gapped` (lost the
    /// CPU) or not, after it `yielded` at least once or not; one that
    /// neither found work nor lost the CPU ran its budget out. A spin that
    /// found work at its first look says nothing about contention (under
    /// a hog, work is always waiting by the time we run).
    pub(crate) fn spun(&mut self, found: bool, gapped: bool, yielded: bool, now: Instant) {
        if found {
            self.misses = 0;
        } else if !gapped {
            self.misses = self.misses.saturating_add(1);
        }
        if !yielded && !gapped {
            return;
        }
        if gapped {
            self.gaps = self.gaps.saturating_add(1);
            if self.gaps >= GAP_LIMIT {
                self.off_until = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        } else {
            self.gaps = 0;
            self.backoff = MIN_BACKOFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::DEFAULT_POLL_MAX_NS;

    const MAX: Duration = Duration::from_nanos(DEFAULT_POLL_MAX_NS);

    #[test]
    fn polls_while_spins_find_work() {
        let mut p = AdaptivePoll::new(DEFAULT_POLL_MAX_NS);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(p.budget(now), MAX);
            p.spun(true, false, true, now);
        }
        for _ in 0..MISS_LIMIT - 1 {
            assert_eq!(p.budget(now), MAX);
            p.spun(false, false, true, now);
        }
        assert_eq!(p.budget(now), MAX, "one miss short of the limit");
        p.spun(true, false, true, now);
        for _ in 0..MISS_LIMIT - 1 {
            assert_eq!(p.budget(now), MAX, "a hit resets the count");
            p.spun(false, false, true, now);
        }
        assert_eq!(p.budget(now), MAX);
    }

    #[test]
    fn stops_after_empty_spins_and_probes() {
        let mut p = AdaptivePoll::new(DEFAULT_POLL_MAX_NS);
        let now = Instant::now();
        for _ in 0..MISS_LIMIT {
            assert_eq!(p.budget(now), MAX);
            p.spun(false, false, true, now);
        }
        for _ in 1..PROBE_EVERY {
            assert_eq!(p.budget(now), Duration::ZERO);
        }
        assert_eq!(p.budget(now), MAX, "the probe");
        p.spun(false, false, true, now);
        assert_eq!(p.budget(now), Duration::ZERO, "a missed probe stays off");
        for _ in 2..PROBE_EVERY {
            p.budget(now);
        }
        assert_eq!(p.budget(now), MAX);
        p.spun(true, false, true, now);
        assert_eq!(p.budget(now), MAX, "a probe that hits turns polling on");
    }

    #[test]
    fn zero_max_never_polls() {
        let mut p = AdaptivePoll::new(0);
        assert_eq!(p.budget(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn contention_backs_off() {
        let mut p = AdaptivePoll::new(DEFAULT_POLL_MAX_NS);
        let now = Instant::now();
        for _ in 0..GAP_LIMIT - 1 {
            p.spun(true, true, true, now);
            assert_eq!(p.budget(now), MAX, "a lost CPU now and then is noise");
        }
        p.spun(false, false, true, now);
        p.spun(false, true, true, now);
        assert_eq!(p.budget(now), MAX, "a clean spin restarted the count");
        for _ in 1..GAP_LIMIT {
            p.spun(true, true, true, now);
        }
        assert_eq!(p.budget(now), Duration::ZERO);
        assert_eq!(p.budget(now + MIN_BACKOFF), MAX);
        p.spun(true, true, true, now);
        assert_eq!(p.budget(now + MIN_BACKOFF), Duration::ZERO, "doubled");
        assert_eq!(p.budget(now + MIN_BACKOFF * 2), MAX);
        p.spun(true, false, false, now);
        p.spun(true, true, true, now);
        assert_eq!(
            p.budget(now),
            Duration::ZERO,
            "a first-look find is no clean spin"
        );
        let later = now + MAX_BACKOFF;
        p.spun(true, false, true, later);
        p.spun(true, true, true, later);
        assert_eq!(p.budget(later), MAX, "reset by a clean spin");
    }
}
