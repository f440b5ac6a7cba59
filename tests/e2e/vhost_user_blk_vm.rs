//! vhost-user-blk exports under the frontend a VM host really runs: QEMU
//! (`vhost-user-blk-pci`, TCG) booting Debian's kernel, whose virtio_blk
//! driver is the guest (`support/vm.rs`). The guest reports what it sees
//! in sysfs (size, block size, queues, serial, read-only, cache mode,
//! discard limits), reads and writes through several hardware queues with
//! direct I/O and through its page cache with a flush, and discards; the
//! host then checks the image file. A read-only export with a 4 KiB block
//! size refuses the guest's writes, and a daemon killed under the guest's
//! writes and started again is reconnected to by QEMU with the requests in
//! flight resubmitted (INFLIGHT_SHMFD), the guest seeing no error.

use nix::sys::signal::Signal;
use ringstor_tests::vm::{guest_dir, Vm, VmConfig};
use ringstor_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// What the guest prints about its disk before the test's own steps.
const SYSFS: &str = r#"
b=/sys/block/vda
echo "RS: size $(cat $b/size)"
echo "RS: lbs $(cat $b/queue/logical_block_size)"
echo "RS: queues $(ls $b/mq | wc -l)"
echo "RS: serial $(cat $b/serial)"
echo "RS: ro $(cat $b/ro)"
echo "RS: cache $(cat $b/queue/write_cache)"
echo "RS: discard_max $(cat $b/queue/discard_max_hw_bytes)"
echo "RS: zeroes_max $(cat $b/queue/write_zeroes_max_bytes)"
"#;

/// A daemon exporting `img` over vhost-user-blk at `sock` with `extra`
/// export options (absolute paths, so that a second daemon can take over).
fn daemon(img: &Path, sock: &Path, extra: &str) -> Daemon {
    // discard=unmap: the guest's discards must reach the file.
    let node = format!(
        "driver=file,node-name=disk0,filename={},discard=unmap",
        img.display()
    );
    let export = format!(
        "type=vhost-user-blk,id=vm0,node-name=disk0,addr.type=unix,addr.path={}{extra}",
        sock.display()
    );
    let d = Daemon::start(scratch(), &["--blockdev", &node, "--export", &export]);
    wait_for_socket(sock);
    d
}

/// A scratch directory with a pattern-filled image.
fn image() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    make_filled(&img, SIZE, 9);
    let sock = dir.path().join("vhost.sock");
    (dir, img, sock)
}

/// QSD's export offers one queue unless told; ringstor offers one per CPU
/// it may use, which is what a 2-vCPU guest's default asks for.
fn queues_option() -> &'static str {
    if is_qsd() {
        ",num-queues=2"
    } else {
        ""
    }
}

#[test]
fn a_linux_guest_sees_the_disk_and_its_io_reaches_the_image() {
    let Some(guest) = guest_dir() else { return };
    let (dir, img, sock) = image();
    let first = region_sha256(&img, 0, 4 * MIB as usize);
    let second = region_sha256(&img, 4 * MIB, 4 * MIB as usize);
    let after_discard = region_sha256(&img, 36 * MIB, 4 * MIB as usize);
    let _d = daemon(&img, &sock, &format!(",writable=on{}", queues_option()));
    let body = format!(
        r#"{SYSFS}
# Each read from its own vCPU, so from its own hardware queue.
for c in 0 1; do
  s=$(taskset -c $c dd if=/dev/vda bs=64k skip=$((c*64)) count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "RS: read$c $s"
done
dd if=/dev/vda of=/dev/vda bs=64k count=64 seek=256 iflag=direct oflag=direct conv=notrunc 2>/dev/null
echo "RS: copy $?"
# Through the guest's page cache, then fsync: writeback and a FLUSH.
dd if=/dev/urandom of=/rand bs=64k count=16 2>/dev/null
echo "RS: rand $(sha256sum /rand | cut -d' ' -f1)"
dd if=/rand of=/dev/vda bs=64k seek=384 conv=notrunc,fsync 2>/dev/null
echo "RS: cached $?"
blkdiscard -o $((32<<20)) -l $((4<<20)) /dev/vda
echo "RS: blkdiscard $?"
"#
    );
    let r = Vm::start(&guest, dir.path(), &sock, &VmConfig::default(), &body).report();

    assert_eq!(r["disk"], "yes", "{r:?}");
    assert_eq!(r["size"], (SIZE / 512).to_string());
    assert_eq!(r["lbs"], "512");
    assert_eq!(r["queues"], "2", "a 2-vCPU guest gets a queue per vCPU");
    // QEMU answers GET_ID with a fixed "vhost_user_blk"; ringstor with the
    // export id, so each disk of a guest is told apart.
    let serial = if is_qsd() { "vhost_user_blk" } else { "vm0" };
    assert_eq!(r["serial"], serial, "GET_ID answers the export id");
    assert_eq!(r["ro"], "0");
    // QSD's guests see a write-through disk (its config space leaves the
    // writeback byte 0); ringstor sets it unless the export is writethrough.
    let cache = if is_qsd() {
        "write through"
    } else {
        "write back"
    };
    assert_eq!(r["cache"], cache, "VIRTIO_BLK_F_FLUSH is offered");
    // ringstor allows 1 GiB per discard / write-zeroes, QEMU 16 MiB.
    let dwz = if is_qsd() { 16 * MIB } else { 1 << 30 };
    assert_eq!(r["discard_max"], dwz.to_string());
    assert_eq!(r["zeroes_max"], dwz.to_string());

    assert_eq!(r["read0"], first, "guest read of 0..4 MiB from vCPU 0");
    assert_eq!(r["read1"], second, "guest read of 4..8 MiB from vCPU 1");
    assert_eq!(r["copy"], "0");
    assert_eq!(r["cached"], "0");
    assert_eq!(r["blkdiscard"], "0");
    // Host side: the direct copy, the flushed buffered write, the discard.
    assert_eq!(region_sha256(&img, 16 * MIB, 4 * MIB as usize), first);
    assert_eq!(region_sha256(&img, 24 * MIB, MIB as usize), r["rand"]);
    assert!(
        read_region(&img, 32 * MIB, 4 * MIB as usize)
            .iter()
            .all(|&b| b == 0),
        "the discarded range reads as zeroes"
    );
    assert_eq!(
        region_sha256(&img, 36 * MIB, 4 * MIB as usize),
        after_discard,
        "the range after the discard is untouched"
    );
}

#[test]
fn a_read_only_export_with_4k_blocks_refuses_the_guests_writes() {
    let Some(guest) = guest_dir() else { return };
    let (dir, img, sock) = image();
    let before = file_sha256(&img);
    let _d = daemon(
        &img,
        &sock,
        &format!(",writable=off,logical-block-size=4096{}", queues_option()),
    );
    let body = format!(
        r#"{SYSFS}
echo "RS: read $(dd if=/dev/vda bs=4k count=256 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=10 oflag=direct conv=notrunc 2>/dev/null
echo "RS: write $?"
"#
    );
    // The frontend enables fewer queues than the export offers.
    let cfg = VmConfig {
        device: ",num-queues=1",
        ..VmConfig::default()
    };
    let r = Vm::start(&guest, dir.path(), &sock, &cfg, &body).report();
    assert_eq!(r["ro"], "1", "VIRTIO_BLK_F_RO");
    assert_eq!(r["lbs"], "4096", "VIRTIO_BLK_F_BLK_SIZE");
    assert_eq!(r["size"], (SIZE / 512).to_string());
    assert_eq!(r["queues"], "1");
    assert_eq!(r["read"], region_sha256(&img, 0, MIB as usize));
    assert_ne!(r["write"], "0", "a write to a read-only export fails");
    assert_eq!(file_sha256(&img), before, "the image is unchanged");
}

#[test]
fn a_killed_daemon_is_restarted_under_a_writing_guest_without_guest_errors() {
    let Some(guest) = guest_dir() else { return };
    let (dir, img, sock) = image();
    let opts = format!(",writable=on{}", queues_option());
    let mut first = daemon(&img, &sock, &opts);
    // 8 MiB of random data written over and over at 40 MiB with direct
    // I/O, so that requests are in flight whenever the daemon dies.
    let body = r#"
dd if=/dev/urandom of=/p bs=64k count=128 2>/dev/null
echo "RS: psha $(sha256sum /p | cut -d' ' -f1)"
bad=0
i=0
while [ $i -lt 12 ]; do
  dd if=/p of=/dev/vda bs=64k count=128 seek=640 oflag=direct conv=notrunc 2>/dev/null || bad=$((bad+1))
  i=$((i+1))
  echo "RS: pass$i"
done
echo "RS: bad $bad"
echo "RS: back $(dd if=/dev/vda bs=64k count=128 skip=640 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
"#;
    let cfg = VmConfig {
        chardev: ",reconnect-ms=500",
        ..VmConfig::default()
    };
    let mut vm = Vm::start(&guest, dir.path(), &sock, &cfg, body);
    vm.wait_for("pass2");
    first.signal(Signal::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let _second = daemon(&img, &sock, &opts);
    let r = vm.report();
    assert_eq!(r["bad"], "0", "no guest write failed across the restart");
    assert_eq!(r["back"], r["psha"], "the guest reads back what it wrote");
    assert_eq!(
        region_sha256(&img, 40 * MIB, 8 * MIB as usize),
        r["psha"],
        "the image holds the guest's last writes"
    );
}
