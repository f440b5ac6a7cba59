//! Recording, retiring, resetting and merging, on a plain thread (the
//! registry is a thread-local, so any thread can stand in for an iothread).

use std::time::Duration;

use super::*;

fn snap(view: View) -> ThreadSnapshot {
    local::snapshot("t", view, &Filter::default())
}

fn export_of<'a>(s: &'a ThreadSnapshot, e: &ExportStats) -> &'a ExportSnapshot {
    s.exports
        .iter()
        .find(|x| x.instance == e.instance())
        .expect("export in snapshot")
}

#[test]
fn counts_bytes_errors_and_in_flight() {
    let e = ExportStats::new("e0", "disk0");
    let rec = e.queue("1", Some("unix:pid=1".into()));
    let a = rec.start(OpKind::Read, 0, 4096);
    let b = rec.start(OpKind::Write, 8192, 512);
    let c = rec.start(OpKind::Write, 1 << 20, 4096);
    let d = rec.start(OpKind::Discard, 0, 1 << 30);
    assert_eq!(export_of(&snap(View::Cumulative), &e).in_flight(), 4);
    rec.finish(a, Outcome::Ok);
    rec.finish(b, Outcome::Ok);
    rec.finish(c, Outcome::Failed(ErrorKind::NoSpace));
    rec.finish(d, Outcome::Invalid(ErrorKind::Invalid));
    rec.protocol_error(&"bad magic");
    let s = snap(View::Cumulative);
    let x = export_of(&s, &e);
    assert_eq!(x.in_flight(), 0);
    let t = x.total();
    let c = &t.counters;
    assert_eq!(c.op(OpKind::Read).operations, 1);
    assert_eq!(c.op(OpKind::Read).bytes, 4096);
    assert_eq!(c.op(OpKind::Write).operations, 1);
    assert_eq!(c.op(OpKind::Write).bytes, 512);
    assert_eq!(c.op(OpKind::Write).failed, 1);
    assert_eq!(c.op(OpKind::Discard).invalid, 1);
    assert_eq!(c.errors_of(ErrorKind::NoSpace), 1);
    assert_eq!(c.errors_of(ErrorKind::Invalid), 1);
    assert_eq!(c.errors_of(ErrorKind::Protocol), 1);
    // Only what succeeded moves the high-water mark.
    assert_eq!(c.wr_highest_offset, 8192 + 512);
    assert_eq!(t.latency.summary(OpKind::Write).map(|s| s.count), Some(2));
    assert_eq!(x.queues[0].client.as_deref(), Some("unix:pid=1"));
}

#[test]
fn dropped_queue_keeps_its_numbers() {
    let e = ExportStats::new("e1", "disk0");
    for q in 0..3 {
        let rec = e.queue(q.to_string(), None);
        let t = rec.start(OpKind::Flush, 0, 0);
        rec.finish(t, Outcome::Ok);
    }
    let s = snap(View::Cumulative);
    let x = export_of(&s, &e);
    assert!(x.queues.is_empty());
    assert_eq!(x.total().counters.op(OpKind::Flush).operations, 3);
}

#[test]
fn reset_starts_the_since_reset_view_only() {
    let e = ExportStats::new("e2", "disk0");
    let rec = e.queue("1", None);
    let old = e.queue("2", None);
    for r in [&rec, &old] {
        let t = r.start(OpKind::Read, 0, 100);
        r.finish(t, Outcome::Ok);
    }
    local::reset(&Filter {
        instances: Some(vec![e.instance()]),
    });
    drop(old);
    let t = rec.start(OpKind::Read, 0, 100);
    rec.finish(t, Outcome::Ok);
    let since = export_of(&snap(View::SinceReset), &e).total();
    assert_eq!(since.counters.op(OpKind::Read).operations, 1);
    assert_eq!(since.counters.op(OpKind::Read).bytes, 100);
    assert_eq!(
        since.latency.summary(OpKind::Read).map(|s| s.count),
        Some(1)
    );
    let all = export_of(&snap(View::Cumulative), &e).total();
    assert_eq!(all.counters.op(OpKind::Read).operations, 3);
}

#[test]
fn percentiles_are_ordered_and_close() {
    let mut l = Latency::default();
    for i in 1..=1000u64 {
        l.record(OpKind::Read, i * 1000);
    }
    let s = l.summary(OpKind::Read).expect("summary");
    assert_eq!(s.count, 1000);
    assert!(s.min_ns <= s.p50_ns && s.p50_ns <= s.p90_ns && s.p90_ns <= s.p99_ns);
    assert!(s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
    let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
    assert!(near(s.p50_ns, 500_000), "{s:?}");
    assert!(near(s.p99_ns, 990_000), "{s:?}");
    assert!(near(s.max_ns, 1_000_000), "{s:?}");
    assert_eq!(s.mean_ns, 500_500);
    let h = &l.op(OpKind::Read).expect("hist").hist;
    let b = cumulative_counts(h, &[1_000, 100_000, 10_000_000]);
    assert_eq!(b[2], 1000);
    assert!(
        b[0] >= 1 && b[0] <= b[1] && (99..=101).contains(&b[1]),
        "{b:?}"
    );
}

#[test]
fn forget_drops_exports_without_queues() {
    let e = ExportStats::new("e3", "disk0");
    let keep = ExportStats::new("e4", "disk0");
    drop(e.queue("1", None));
    let _live = keep.queue("1", None);
    local::forget(&[e.instance(), keep.instance()]);
    let s = snap(View::Cumulative);
    assert!(!s.exports.iter().any(|x| x.instance == e.instance()));
    assert!(s.exports.iter().any(|x| x.instance == keep.instance()));
}

#[test]
fn idle_time_follows_the_last_request() {
    let e = ExportStats::new("e5", "disk0");
    let rec = e.queue("1", None);
    let t = rec.start(OpKind::Read, 0, 1);
    rec.finish(t, Outcome::Ok);
    std::thread::sleep(Duration::from_millis(5));
    let s = snap(View::Cumulative);
    let idle = export_of(&s, &e).total().counters.idle_ns(s.taken);
    assert!(idle.is_some_and(|n| n >= 5_000_000), "{idle:?}");
}

#[test]
fn block_errors_map_to_outcomes() {
    use engine::block::BlockError;
    let oob = BlockError::OutOfRange {
        offset: 0,
        len: 1,
        size: 0,
    };
    assert_eq!(
        Outcome::of_error(&oob),
        Outcome::Invalid(ErrorKind::Invalid)
    );
    let io = BlockError::Io {
        op: "read",
        offset: 0,
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    assert_eq!(Outcome::of_error(&io), Outcome::Failed(ErrorKind::Io));
    assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Ok);
}
