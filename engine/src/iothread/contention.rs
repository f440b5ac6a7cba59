//! Leaving a contended CPU: an iothread that was placed round robin (no
//! `cpu=`) moves to an idler CPU when another task keeps taking its own.
//!
//! Pinning is what makes an iothread's ring, caches and buffers its own,
//! but a pinned thread cannot dodge a busy neighbour: with a CPU hog on
//! its CPU, every wake-up waits out the hog's time slice, and NBD 4k reads
//! at qd1 fell to 0.24x of QSD's, whose unpinned thread the scheduler
//! simply moved to the free CPU (`benches/README.md`, "Leaving a contended
//! CPU"). The spin already stops under contention (`poll.rs`); this moves
//! the thread.
//!
//! The signal is the thread's own run delay, the time it was runnable but
//! waited for its CPU (`/proc/thread-self/schedstat`, second field).
//! Serving alone on its CPU, an iothread waits under 1 % of the time (22 ms
//! in 4 s at NBD qd32, 9 ms at qd1); with a hog on its CPU, 36 %; beside
//! the four fio jobs of the bench's 4-connection row, up to 50 %, where
//! both CPUs are busy and moving gains nothing. So the wait says when to
//! look, and the other CPUs' idle time whether to move: a thread whose run
//! delay exceeded [`CONTENDED`] of a [`WINDOW`] notes the CPUs' idle times
//! (`/proc/stat`); if the next [`STREAK`] windows are contended too, it
//! re-pins itself to the idlest allowed CPU that was idle over them at
//! least as long as the thread waited (and at least [`IDLE_MIN`]). None
//! that idle: it stays. It stays too when its own io_uring workers
//! (`iou-wrk-<tid>`, which run the buffered writes it punts and start on
//! its CPU) took at least half of that time on its CPU: moving away from
//! them is what spreading them with `IORING_REGISTER_IOWQ_AFF` did, which
//! measured no gain (`benches/README.md`), and the next workers would
//! start on the new CPU and the thread move back (1 MiB writes moved it
//! ten times in four short runs). A thread moved once stays at least [`MIN_STAY`],
//! doubled (up to [`MAX_STAY`]) for each move that follows soon after the
//! last, so two threads cannot chase each other around. Threads created
//! with `cpu=` never move: the user chose that CPU.
//!
//! An idle thread does not look (the check runs in its loop, and a parked
//! thread's window spans its whole sleep, which holds no run delay).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest span the run delay is measured over.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// Run delay over a window, as a fraction of it, that counts as contended.
pub(crate) const CONTENDED: f64 = 0.10;
/// Contended windows in a row before the thread looks for another CPU.
pub(crate) const STREAK: u32 = 3;
/// Idle share of the streak a CPU needs to be moved to.
pub(crate) const IDLE_MIN: f64 = 0.20;
/// Least time on a CPU after a move.
pub(crate) const MIN_STAY: Duration = Duration::from_secs(1);
/// Most time on a CPU after a run of moves.
pub(crate) const MAX_STAY: Duration = Duration::from_secs(60);

/// What the window check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep going.
    Stay,
    /// First contended window of a streak: note the CPUs' idle times now.
    StreakStarts,
    /// The streak is long enough: pick a CPU.
    LookAround,
}

/// The decision state, free of clocks and files so it can be tested.
#[derive(Debug)]
pub(crate) struct Streak {
    streak: u32,
    /// No move before this instant.
    stay_until: Option<Instant>,
    stay: Duration,
    last_move: Option<Instant>,
}

impl Streak {
    pub(crate) fn new() -> Streak {
        Streak {
            streak: 0,
            stay_until: None,
            stay: MIN_STAY,
            last_move: None,
        }
    }

    /// One window of `elapsed` ended at `now`, `delay` of which the thread
    /// waited for its CPU.
    pub(crate) fn window(&mut self, delay: Duration, elapsed: Duration, now: Instant) -> Step {
        let contended =
            !elapsed.is_zero() && delay.as_secs_f64() >= CONTENDED * elapsed.as_secs_f64();
        if !contended || self.stay_until.is_some_and(|t| now < t) {
            self.streak = 0;
            return Step::Stay;
        }
        self.streak += 1;
        match self.streak {
            1 => Step::StreakStarts,
            n if n > STREAK => Step::LookAround,
            _ => Step::Stay,
        }
    }

    /// The look found no CPU: start a new streak (and a new idle sample).
    pub(crate) fn nowhere(&mut self) {
        self.streak = 0;
    }

    /// The thread moved at `now`.
    pub(crate) fn moved(&mut self, now: Instant) {
        self.streak = 0;
        let soon = self
            .last_move
            .is_some_and(|t| now.saturating_duration_since(t) < self.stay * 10);
        self.stay = if soon {
            (self.stay * 2).min(MAX_STAY)
        } else {
            MIN_STAY
        };
        self.last_move = Some(now);
        self.stay_until = Some(now + self.stay);
    }
}

/// Idle and total time of one CPU, in `/proc/stat` ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) cpu: usize,
    pub(crate) idle: u64,
    pub(crate) total: u64,
}

/// The `cpuN` lines of a `/proc/stat` text (idle counts idle + iowait).
pub(crate) fn parse_stat(text: &str) -> Vec<CpuTimes> {
    let mut out = Vec::new();
    for line in text.lines() {
        // "cpu" alone is the total line.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(Ok(cpu)) = fields.next().map(str::parse::<usize>) else {
            continue;
        };
        let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let total = v.iter().take(8).sum();
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        out.push(CpuTimes { cpu, idle, total });
    }
    out
}

/// The CPU of `allowed` other than `current` that was idlest between the
/// two samples, with its idle share, if that share was at least `need`.
pub(crate) fn idlest(
    before: &[CpuTimes],
    after: &[CpuTimes],
    allowed: &[usize],
    current: usize,
    need: f64,
) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for a in after {
        if a.cpu == current || !allowed.contains(&a.cpu) {
            continue;
        }
        let Some(b) = before.iter().find(|b| b.cpu == a.cpu) else {
            continue;
        };
        let total = a.total.saturating_sub(b.total);
        if total == 0 {
            continue;
        }
        let share = a.idle.saturating_sub(b.idle) as f64 / total as f64;
        if share >= need && best.is_none_or(|(_, s)| share > s) {
            best = Some((a.cpu, share));
        }
    }
    best
}

/// The `processor` field (39) of a `/proc/<pid>/task/<tid>/stat` text.
pub(crate) fn stat_processor(text: &str) -> Option<usize> {
    // The command name, in parentheses, may hold spaces: count after it.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(36)?.parse().ok()
}

/// Run time of each of the io_uring workers of iothread `tid` that last
/// ran on `cpu` (`/proc/self/task`: name `iou-wrk-<tid>`, run time from
/// `schedstat`), by worker tid.
fn workers_on(tid: i32, cpu: usize) -> Vec<(u32, Duration)> {
    let name = format!("iou-wrk-{tid}");
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let is_worker = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name);
        if !is_worker {
            continue;
        }
        let on_cpu = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|t| stat_processor(&t))
            == Some(cpu);
        let run = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t));
        let worker = entry.file_name().to_str().and_then(|t| t.parse().ok());
        if let (true, Some((run, _)), Some(w)) = (on_cpu, run, worker) {
            out.push((w, run));
        }
    }
    out
}

/// How long the workers of `after` ran since `before` (a worker new since
/// then counts from its start).
pub(crate) fn workers_ran(before: &[(u32, Duration)], after: &[(u32, Duration)]) -> Duration {
    after
        .iter()
        .map(|(w, t)| {
            let start = before
                .iter()
                .find(|(b, _)| b == w)
                .map_or(Duration::ZERO, |(_, s)| *s);
            t.saturating_sub(start)
        })
        .sum()
}

/// Run time and run delay (waiting for a CPU) of a `schedstat` text.
pub(crate) fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut f = text.split_ascii_whitespace().map(str::parse::<u64>);
    let (Some(Ok(run)), Some(Ok(delay))) = (f.next(), f.next()) else {
        return None;
    };
    Some((Duration::from_nanos(run), Duration::from_nanos(delay)))
}

/// This thread's run delay so far (`/proc/thread-self/schedstat`).
struct RunDelay(File);

impl RunDelay {
    fn open() -> Option<RunDelay> {
        File::open("/proc/thread-self/schedstat").ok().map(RunDelay)
    }

    fn read(&self) -> Option<Duration> {
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..n)?).ok()?;
        Some(parse_schedstat(text)?.1)
    }
}

fn read_stat() -> Vec<CpuTimes> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_stat(&t))
        .unwrap_or_default()
}

/// One iothread's mover: owns the CPU the thread is pinned to now
/// (`home`, which `query-iothreads` reports).
pub(crate) struct Mover {
    name: Arc<str>,
    tid: i32,
    allowed: Vec<usize>,
    home: Arc<AtomicUsize>,
    delay: RunDelay,
    last: (Instant, Duration),
    streak: Streak,
    idle_before: Vec<CpuTimes>,
    /// This thread's io_uring workers' run times when `idle_before` was
    /// taken.
    workers_before: Vec<(u32, Duration)>,
    /// Run delay and time since `idle_before` was taken.
    waited: (Duration, Duration),
}

impl Mover {
    /// A mover for the calling (pinned) thread `tid`, or `None` when it
    /// has nowhere to go or no schedstat to read.
    pub(crate) fn new(
        name: Arc<str>,
        tid: i32,
        allowed: Vec<usize>,
        home: Arc<AtomicUsize>,
    ) -> Option<Mover> {
        if allowed.len() < 2 {
            return None;
        }
        let delay = RunDelay::open()?;
        let now = delay.read()?;
        Some(Mover {
            name,
            tid,
            allowed,
            home,
            delay,
            last: (Instant::now(), now),
            streak: Streak::new(),
            idle_before: Vec::new(),
            workers_before: Vec::new(),
            waited: (Duration::ZERO, Duration::ZERO),
        })
    }

    /// Called from the run loop with the time; looks at most once a
    /// [`WINDOW`].
    pub(crate) fn tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last.0);
        if elapsed < WINDOW {
            return;
        }
        let Some(total) = self.delay.read() else {
            return;
        };
        let delay = total.saturating_sub(self.last.1);
        self.last = (now, total);
        let step = self.streak.window(delay, elapsed, now);
        if step == Step::StreakStarts {
            self.idle_before = read_stat();
            self.workers_before = workers_on(self.tid, self.home.load(Ordering::Relaxed));
            self.waited = (Duration::ZERO, Duration::ZERO);
            return;
        }
        self.waited.0 += delay;
        self.waited.1 += elapsed;
        if step == Step::LookAround {
            self.look_around(now);
        }
    }

    fn look_around(&mut self, now: Instant) {
        let current = self.home.load(Ordering::Relaxed);
        let workers = workers_ran(&self.workers_before, &workers_on(self.tid, current));
        if workers >= self.waited.0 / 2 {
            log::debug!(
                "iothread {}: its io_uring workers took {} ms of CPU {current} while it waited {} ms; staying",
                self.name,
                workers.as_millis(),
                self.waited.0.as_millis()
            );
            self.streak.nowhere();
            return;
        }
        let after = read_stat();
        let waited = self.waited.0.as_secs_f64() / self.waited.1.as_secs_f64().max(1e-9);
        let need = waited.max(IDLE_MIN);
        let Some((cpu, idle)) = idlest(&self.idle_before, &after, &self.allowed, current, need)
        else {
            log::debug!(
                "iothread {}: CPU {current} is contended (waited {:.0} %), no CPU idle that long; staying",
                self.name,
                100.0 * waited
            );
            self.streak.nowhere();
            return;
        };
        if let Err(e) = super::pin_to_cpu(cpu) {
            log::warn!("iothread {}: cannot move to CPU {cpu}: {e}", self.name);
            self.streak.nowhere();
            return;
        }
        self.home.store(cpu, Ordering::Relaxed);
        self.streak.moved(now);
        log::info!(
            "iothread {}: CPU {current} is contended (waited {:.0} % of the last {} ms for it); moved to CPU {cpu} (idle {:.0} %)",
            self.name,
            100.0 * waited,
            self.waited.1.as_millis(),
            100.0 * idle,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = WINDOW;

    #[test]
    fn a_streak_of_contended_windows_looks_around() {
        let mut s = Streak::new();
        let now = Instant::now();
        let busy = W / 5;
        assert_eq!(s.window(busy, W, now), Step::StreakStarts);
        for _ in 1..STREAK {
            assert_eq!(s.window(busy, W, now), Step::Stay);
        }
        assert_eq!(s.window(busy, W, now), Step::LookAround);
        assert_eq!(s.window(W / 100, W, now), Step::Stay, "a quiet window");
        assert_eq!(s.window(busy, W, now), Step::StreakStarts, "starts over");
        assert_eq!(s.window(Duration::ZERO, Duration::ZERO, now), Step::Stay);
    }

    #[test]
    fn the_threshold_is_a_share_of_the_window() {
        let mut s = Streak::new();
        let now = Instant::now();
        let long = W * 50;
        assert_eq!(s.window(W, long, now), Step::Stay, "2 % of a long sleep");
        assert_eq!(s.window(long / 5, long, now), Step::StreakStarts);
    }

    #[test]
    fn moves_back_off_while_they_follow_each_other() {
        let mut s = Streak::new();
        let t0 = Instant::now();
        s.moved(t0);
        let busy = W / 2;
        assert_eq!(s.window(busy, W, t0 + MIN_STAY / 2), Step::Stay, "staying");
        assert_eq!(s.window(busy, W, t0 + MIN_STAY), Step::StreakStarts);
        let t1 = t0 + MIN_STAY * 2;
        s.moved(t1);
        assert_eq!(s.window(busy, W, t1 + MIN_STAY), Step::Stay, "doubled");
        assert_eq!(s.window(busy, W, t1 + MIN_STAY * 2), Step::StreakStarts);
        for i in 0..20 {
            s.moved(t1 + MIN_STAY * (i + 3));
        }
        assert_eq!(s.stay, MAX_STAY);
        let late = t1 + MAX_STAY * 30;
        s.moved(late);
        assert_eq!(s.stay, MIN_STAY, "reset after a long quiet");
    }

    #[test]
    fn reads_the_processor_of_a_task_stat() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[39 - 3] = "1".into();
        let text = format!("123 (iou-wrk (x) 9) {}", fields.join(" "));
        assert_eq!(stat_processor(&text), Some(1));
        assert_eq!(stat_processor("123 (short) R 1 2"), None);
        let own = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        assert!(stat_processor(&own).is_some(), "{own}");
    }

    #[test]
    fn parses_schedstat() {
        let ms = Duration::from_millis;
        assert_eq!(
            parse_schedstat("5000000 2000000 17\n"),
            Some((ms(5), ms(2)))
        );
        assert_eq!(parse_schedstat("5000000"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
        let own = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        assert!(parse_schedstat(&own).is_some(), "{own}");
    }

    #[test]
    fn sums_what_the_workers_ran_since() {
        let ms = Duration::from_millis;
        let before = [(10, ms(5)), (11, ms(7))];
        let after = [(10, ms(9)), (12, ms(3))];
        assert_eq!(
            workers_ran(&before, &after),
            ms(4 + 3),
            "11 is gone, 12 is new"
        );
        assert_eq!(workers_ran(&[], &[]), Duration::ZERO);
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  10 0 10 100 5 0 0 0 0 0\n\
                    cpu0 5 0 5 40 2 0 0 1 3 0\n\
                    cpu1 5 0 5 60 3 0 0 0 0 0\n\
                    intr 1 2 3\n\
                    cpufreq x\n";
        assert_eq!(
            parse_stat(text),
            vec![
                CpuTimes {
                    cpu: 0,
                    idle: 42,
                    total: 53
                },
                CpuTimes {
                    cpu: 1,
                    idle: 63,
                    total: 73
                },
            ]
        );
    }

    #[test]
    fn picks_the_idlest_allowed_other_cpu() {
        let t = |cpu, idle, total| CpuTimes { cpu, idle, total };
        let before = [t(0, 0, 0), t(1, 0, 0), t(2, 0, 0), t(3, 0, 0)];
        let after = [t(0, 90, 100), t(1, 50, 100), t(2, 80, 100), t(3, 10, 100)];
        let pick = |allowed: &[usize], current, need| {
            idlest(&before, &after, allowed, current, need).map(|(cpu, _)| cpu)
        };
        assert_eq!(pick(&[0, 1, 2, 3], 0, IDLE_MIN), Some(2));
        assert_eq!(
            idlest(&before, &after, &[0, 1, 2, 3], 0, IDLE_MIN),
            Some((2, 0.8))
        );
        assert_eq!(
            pick(&[0, 1, 2, 3], 0, 0.85),
            None,
            "not idle enough for the wait"
        );
        assert_eq!(pick(&[0, 1, 3], 0, IDLE_MIN), Some(1), "2 not allowed");
        assert_eq!(pick(&[0, 3], 0, IDLE_MIN), None, "3 is busy too");
        assert_eq!(pick(&[0, 1, 2, 3], 2, IDLE_MIN), Some(0));
        assert_eq!(
            idlest(&[], &after, &[0, 1], 0, IDLE_MIN),
            None,
            "no first sample"
        );
    }
}
