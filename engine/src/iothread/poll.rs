//! Adaptive busy-polling: how long an idle iothread spins before it parks.
//!
//! QEMU's iothreads (`poll-max-ns`, `poll-grow`, `poll-shrink`) measure how
//! long each wait for work lasted (`block_ns`, spinning and parking
//! together) and adjust the spin time: a wait longer than `poll-max-ns`
//! could not have been saved by polling, so the poll time shrinks (divided
//! by `poll-shrink`; to zero when that is 0); a wait that outlasted the
//! poll but fits in `poll-max-ns` grows it (times `poll-grow`, 2 when 0,
//! starting at 4 µs); a wait the poll covered changes nothing. So an idle or
//! lightly loaded thread does not spin at all, and a busy one spins just
//! long enough.
//!
//! Spinning also stops while the core is contended: a spin whose clock
//! reads jump by more than [`PREEMPT_GAP`] was preempted by another task
//! on this core, which then waits behind us for every spin. Polling is off
//! for a back-off that doubles with every preemption seen on the next try
//! (up to [`MAX_BACKOFF`]), and resets once a poll runs undisturbed.

use std::time::{Duration, Instant};

/// QEMU's first poll time when growing from zero.
const START_NS: u64 = 4000;
/// Two clock reads of one spin this far apart mean the thread lost its CPU.
pub(crate) const PREEMPT_GAP: Duration = Duration::from_micros(20);
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An iothread's polling parameters (QEMU's `IothreadProperties`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollParams {
    /// Longest spin in ns; 0 never polls.
    pub max_ns: u64,
    /// Growth factor; 0 means QEMU's default, 2.
    pub grow: u64,
    /// Shrink divisor; 0 means drop to zero at once.
    pub shrink: u64,
}

impl Default for PollParams {
    fn default() -> Self {
        PollParams {
            max_ns: super::DEFAULT_POLL_MAX_NS,
            grow: 0,
            shrink: 0,
        }
    }
}

/// The adaptive state of one iothread's polling.
pub(crate) struct AdaptivePoll {
    params: PollParams,
    poll_ns: u64,
    /// No polling before this instant (the core was contended).
    off_until: Option<Instant>,
    backoff: Duration,
}

impl AdaptivePoll {
    pub(crate) fn new(params: PollParams) -> AdaptivePoll {
        AdaptivePoll {
            params,
            poll_ns: 0,
            off_until: None,
            backoff: MIN_BACKOFF,
        }
    }

    /// How long to spin now.
    pub(crate) fn budget(&mut self, now: Instant) -> Duration {
        if let Some(t) = self.off_until {
            if now < t {
                return Duration::ZERO;
            }
            self.off_until = None;
        }
        Duration::from_nanos(self.poll_ns)
    }

    /// The last spin was preempted: stop polling for a while.
    pub(crate) fn preempted(&mut self, now: Instant) {
        self.off_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// A spin ran without losing the CPU.
    pub(crate) fn undisturbed(&mut self) {
        self.backoff = MIN_BACKOFF;
    }

    /// Adjusts the poll time to a wait for work that lasted `block`.
    pub(crate) fn adjust(&mut self, block: Duration) {
        let block_ns = u64::try_from(block.as_nanos()).unwrap_or(u64::MAX);
        let max = self.params.max_ns;
        if block_ns <= self.poll_ns {
            // The poll covered the wait: the sweet spot.
        } else if block_ns > max {
            self.poll_ns = match self.params.shrink {
                0 => 0,
                s => self.poll_ns / s,
            };
        } else if self.poll_ns < max {
            let grow = if self.params.grow == 0 {
                2
            } else {
                self.params.grow
            };
            self.poll_ns = match self.poll_ns {
                0 => START_NS,
                p => p.saturating_mul(grow),
            }
            .min(max);
        }
    }

    #[cfg(test)]
    pub(crate) fn poll_ns(&self) -> u64 {
        self.poll_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn grows_to_the_wait_and_stops_at_max() {
        let mut p = AdaptivePoll::new(PollParams::default());
        p.adjust(us(20));
        assert_eq!(p.poll_ns(), 4000);
        p.adjust(us(20));
        assert_eq!(p.poll_ns(), 8000);
        p.adjust(us(20));
        p.adjust(us(20));
        assert_eq!(p.poll_ns(), 32000);
        p.adjust(us(20));
        assert_eq!(p.poll_ns(), 32000, "covered waits change nothing");
        p.adjust(us(32));
        assert_eq!(p.poll_ns(), 32000);
        p.adjust(us(33));
        assert_eq!(p.poll_ns(), 0, "a wait past max could not be polled away");
    }

    #[test]
    fn long_waits_shrink() {
        let mut p = AdaptivePoll::new(PollParams {
            max_ns: 64000,
            grow: 4,
            shrink: 2,
        });
        p.adjust(us(10));
        p.adjust(us(10));
        assert_eq!(p.poll_ns(), 16000);
        p.adjust(Duration::from_millis(5));
        assert_eq!(p.poll_ns(), 8000);
        let mut q = AdaptivePoll::new(PollParams::default());
        q.adjust(us(10));
        q.adjust(Duration::from_secs(1));
        assert_eq!(q.poll_ns(), 0, "shrink 0 drops to zero");
    }

    #[test]
    fn zero_max_never_polls() {
        let mut p = AdaptivePoll::new(PollParams {
            max_ns: 0,
            grow: 0,
            shrink: 0,
        });
        p.adjust(us(1));
        assert_eq!(p.budget(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn preemption_backs_off() {
        let mut p = AdaptivePoll::new(PollParams::default());
        p.adjust(us(10));
        let now = Instant::now();
        p.preempted(now);
        assert_eq!(p.budget(now), Duration::ZERO);
        assert_eq!(p.budget(now + MIN_BACKOFF), Duration::from_nanos(4000));
        p.preempted(now);
        assert_eq!(p.budget(now + MIN_BACKOFF), Duration::ZERO, "doubled");
    }
}
