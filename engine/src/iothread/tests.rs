use std::time::{Duration, Instant};

use super::*;
use crate::buf::Buf;
use crate::op;

fn spawn(name: &str) -> IoThread {
    IoThread::spawn(IoThreadConfig {
        name: name.into(),
        cpu: Some(0),
        movable: false,
        ring_entries: 64,
        poll_max_ns: 0,
    })
    .expect("spawn iothread")
}

#[test]
fn pinned_and_reports_tid() {
    let t = spawn("t-pin");
    let h = t.handle().clone();
    assert!(h.thread_id() > 0);
    let status = std::fs::read_to_string(format!("/proc/self/task/{}/status", h.thread_id()))
        .expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .expect("line");
    assert!(line.ends_with("\t0"), "{line}");
    assert_eq!(h.call(|| 40 + 2).expect("call"), 42);
    t.stop();
}

#[test]
fn file_read_write_roundtrip() {
    let t = spawn("t-rw");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, vec![7u8; 8192]).expect("write");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let got = t
        .handle()
        .block_on(move || async move {
            let fd = op::SharedFd::from_owner(file);
            let mut b = Buf::zeroed(4096);
            b.as_mut_slice().fill(9);
            let (r, _b) = op::write_at(&fd, b, 0, 4096, 0).await;
            r.expect("write");
            op::fsync(&fd).await.expect("fsync");
            let (r, b) = op::read_at(&fd, Buf::zeroed(8192), 0, 0).await;
            assert_eq!(r.expect("read"), 8192);
            (b.as_slice()[4095], b.as_slice()[4096])
        })
        .expect("block_on");
    assert_eq!(got, (7, 9));
}

#[test]
fn sleep_and_timeout() {
    let t = spawn("t-time");
    let start = Instant::now();
    let r = t
        .handle()
        .block_on(|| async {
            op::sleep(Duration::from_millis(20)).await;
            op::timeout(Duration::from_millis(10), op::sleep(Duration::from_secs(5))).await
        })
        .expect("block_on");
    assert_eq!(r, Err(op::Elapsed));
    let el = start.elapsed();
    assert!(
        el >= Duration::from_millis(30) && el < Duration::from_secs(4),
        "{el:?}"
    );
}

#[test]
fn many_tasks_and_cross_thread_wakes() {
    let t = spawn("t-many");
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..200u32 {
        let tx = tx.clone();
        t.handle()
            .post(move || {
                spawn_local(async move {
                    op::sleep(Duration::from_millis(u64::from(i % 5))).await;
                    let _ = tx.send(i);
                })
            })
            .expect("post");
    }
    let mut got: Vec<u32> = (0..200)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("recv"))
        .collect();
    got.sort();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn dropped_ops_are_cancelled_and_stop_is_clean() {
    let t = spawn("t-drop");
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
    t.handle()
        .post(move || {
            spawn_local(async move {
                let fd = op::SharedFd::new(a.into());
                // Never completes: the peer never sends. Stop must cancel it.
                let _ = op::recv_into(&fd, Buf::with_capacity(4096), 4096).await;
            })
        })
        .expect("post");
    std::thread::sleep(Duration::from_millis(20));
    t.stop();
}

#[test]
fn registered_buffers_read_and_write() {
    let t = spawn("t-fixed");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, vec![5u8; 65536]).expect("write");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let (fixed, byte) = t
        .handle()
        .block_on(move || async move {
            let fd = op::SharedFd::registered(file);
            let mut b = crate::buf::pool::check_out(4096);
            let fixed = b.fixed_index().is_some();
            b.as_mut_slice().fill(6);
            let (r, b) = op::write_at(&fd, b, 0, 8192, 0).await;
            r.expect("write fixed");
            crate::buf::pool::check_in(b);
            let (r, b) = op::read_at(&fd, crate::buf::pool::check_out(65536), 0, 0).await;
            assert_eq!(r.expect("read fixed"), 65536);
            (
                fixed && fd.fixed_slot().is_some(),
                (b.as_slice()[8191], b.as_slice()[8192]),
            )
        })
        .expect("block_on");
    // Root (CAP_IPC_LOCK) always gets an arena; others may legitimately not.
    if nix::unistd::Uid::effective().is_root() {
        assert!(fixed, "root should get registered buffers and files");
    }
    assert_eq!(byte, (5, 6));
}

#[test]
fn writev_then_readv_through_a_pipe_split_where_asked() {
    let t = spawn("t-rwv");
    assert!(
        t.handle().features().sqe128,
        "this kernel has 128-byte SQEs"
    );
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let got = t
        .handle()
        .block_on(move || async move {
            let (r, w) = (op::SharedFd::new(r), op::SharedFd::new(w));
            let mut list = op::GatherList::new();
            list.push_bytes(b"header--");
            let mut data = Buf::zeroed(4096);
            data.as_mut_slice().fill(5);
            list.push_buf(data, 0..100);
            let (n, _list) = op::writev_list(&w, list).await;
            let mut head = Buf::zeroed(8);
            head.set_len(8);
            let mut body = Buf::zeroed(4096);
            body.set_len(4096);
            let (m, bufs) = op::readv_bufs(&r, vec![head, body]).await;
            (n.expect("writev"), m.expect("readv"), bufs)
        })
        .expect("block_on");
    let (n, m, bufs) = got;
    assert_eq!((n, m), (108, 108));
    assert_eq!(bufs[0].as_slice(), b"header--");
    assert!(bufs[1].as_slice()[..100].iter().all(|&b| b == 5));
    t.stop();
}

#[test]
fn uring_cmd_refuses_replaced_buffers_without_submitting() {
    let t = spawn("t-cmd");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(dir.path().join("f")).expect("create");
    let r = t
        .handle()
        .block_on(move || async move {
            let fd = op::SharedFd::from_owner(file);
            let mut bufs = op::CmdBufs::new(vec![Buf::zeroed(4096)]);
            let taken = bufs.take(0).expect("buffer 0");
            assert!(bufs.get(0).is_none());
            bufs.put(0, Buf::zeroed(4096));
            drop(taken);
            // SAFETY: the command never reaches the kernel (replaced buffer).
            let (r, _) = unsafe { op::uring_cmd80(&fd, 0, [0; 80], bufs).await };
            r.map_err(|e| e.raw_os_error())
        })
        .expect("block_on");
    assert_eq!(r, Err(Some(libc::EINVAL)));
    t.stop();
}

/// Yields once: wakes itself (a wake on the task's own iothread).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

#[test]
fn reused_task_slots_and_foreign_wakes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    let t = spawn("t-reuse");
    // A waker that outlives its task (held here, on another thread): its
    // slot goes to later tasks, and waking it must not disturb them.
    let (wtx, wrx) = crossbeam_channel::bounded::<Waker>(1);
    t.handle()
        .post(move || {
            spawn_local(async move {
                let w = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
                let _ = wtx.send(w);
            })
        })
        .expect("post");
    let stale = wrx
        .recv_timeout(Duration::from_secs(5))
        .expect("stale waker");

    // Tasks one after the other in the same slots, each waking itself.
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..500u32 {
        let tx = tx.clone();
        t.handle()
            .post(move || {
                spawn_local(async move {
                    for _ in 0..3 {
                        yield_now().await;
                    }
                    let _ = tx.send(i);
                })
            })
            .expect("post");
        stale.wake_by_ref();
    }
    let mut got: Vec<u32> = (0..500)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("recv"))
        .collect();
    got.sort();
    assert_eq!(got, (0..500).collect::<Vec<_>>());

    // A task that only a wake from this (foreign) thread can finish.
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let go = Arc::new(AtomicBool::new(false));
    let (dtx, drx) = crossbeam_channel::bounded(1);
    let (s2, g2) = (slot.clone(), go.clone());
    t.handle()
        .post(move || {
            spawn_local(async move {
                std::future::poll_fn(|cx| {
                    if g2.load(Ordering::Acquire) {
                        return Poll::Ready(());
                    }
                    if let Ok(mut s) = s2.lock() {
                        *s = Some(cx.waker().clone());
                    }
                    Poll::Pending
                })
                .await;
                let _ = dtx.send(());
            })
        })
        .expect("post");
    let deadline = Instant::now() + Duration::from_secs(5);
    let w = loop {
        if let Some(w) = slot.lock().expect("lock").take() {
            break w;
        }
        assert!(Instant::now() < deadline, "task never polled");
        std::thread::sleep(Duration::from_millis(1));
    };
    stale.wake();
    assert!(
        drx.recv_timeout(Duration::from_millis(50)).is_err(),
        "finished unwoken"
    );
    go.store(true, Ordering::Release);
    w.wake();
    drx.recv_timeout(Duration::from_secs(5))
        .expect("woken from another thread");
    t.stop();
}
