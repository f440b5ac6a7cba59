//! `driver=rbd` against a real single-node Ceph cluster started by the
//! tests (`support/ceph.rs`): data written through ringstor's NBD export
//! is what `rbd export` reads back, discards reach the pool only with
//! `discard=unmap`, and a wrong key, pool or image is a clear
//! `blockdev-add` error (the same as QSD's) while the daemon keeps serving.

use ringstor_tests::ceph::{ceph_installed, Ceph, CEPH_POOL, CEPH_USER};
use ringstor_tests::*;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

const MIB: u64 = 1 << 20;

fn skip() -> bool {
    if !ceph_installed() {
        eprintln!("SKIP: Ceph is not installed (tests/run installs ceph-mon, ceph-osd)");
        return true;
    }
    skip_on_qsd("rbd tests start ringstor with ringstor's options")
}

/// A fresh image name (tests share the cluster).
fn image(c: &Ceph, size_mib: u64) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    c.rbd(&[
        "create",
        "--size",
        &format!("{size_mib}M"),
        &format!("{CEPH_POOL}/{name}"),
    ]);
    name
}

/// ringstor exporting rbd image `img` as writable export `r` on `{dir}/nbd.sock`.
fn export(c: &Ceph, img: &str, extra: &str) -> Daemon {
    let secret = format!("secret,id=sec0,file={},format=base64", c.key_file.display());
    let node = format!(
        "driver=rbd,node-name=r,pool={CEPH_POOL},image={img},conf={},user={CEPH_USER},key-secret=sec0{extra}",
        c.conf.display()
    );
    Daemon::start(
        scratch(),
        &[
            "--object",
            &secret,
            "--blockdev",
            &node,
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=r,name=r,writable=on",
        ],
    )
}

fn uri(d: &Daemon) -> String {
    nbd_uri("r", &d.path("nbd.sock"))
}

fn qemu_io(uri: &str, cmds: &[&str]) -> Ran {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(uri);
    let r = run("qemu-io", &args, TOOL_TIMEOUT).success("qemu-io");
    assert!(!r.stdout.contains("failed"), "qemu-io: {}", r.stdout);
    r
}

fn file_sha(path: &Path) -> String {
    file_sha256(path)
}

#[test]
fn rbd_export_writes_what_rbd_export_reads_back() {
    if skip() {
        return;
    }
    let c = Ceph::shared();
    let img = image(&c, 64);
    let d = export(&c, &img, "");
    let u = uri(&d);
    qemu_io(
        &u,
        &[
            "write -P 0x5a 0 1M",
            "write -P 0xa5 -f 8M 64k",
            "write -z 16M 1M",
            "write -P 0x11 63M 1M",
            "flush",
            "read -P 0x5a 0 1M",
            "read -P 0xa5 8M 64k",
            "read -P 0 16M 1M",
            "read -P 0x11 63M 1M",
        ],
    );
    let fio_uri = format!("--uri={u}");
    let fio = run(
        "fio",
        &[
            "--name=rbd",
            "--ioengine=nbd",
            &fio_uri,
            "--rw=randwrite",
            "--bs=4k",
            "--size=8M",
            "--offset=24M",
            "--iodepth=16",
            "--verify=crc32c",
            "--verify_state_save=0",
        ],
        TOOL_TIMEOUT,
    )
    .success("fio randwrite + verify");
    assert!(!fio.stdout.contains("verify:"), "{}", fio.stdout);
    // What the export serves now is what the image holds, byte for byte.
    let served = c.dir().join(format!("{img}.served"));
    run(
        "nbdcopy",
        &[&u, served.to_str().expect("path")],
        TOOL_TIMEOUT,
    )
    .success("nbdcopy");
    drop(d);
    let exported = c.dir().join(format!("{img}.raw"));
    c.rbd(&[
        "export",
        &format!("{CEPH_POOL}/{img}"),
        exported.to_str().expect("path"),
    ]);
    assert_eq!(file_sha(&served), file_sha(&exported));
    assert!(read_region(&exported, 0, MIB as usize)
        .iter()
        .all(|&b| b == 0x5a));
    assert!(read_region(&exported, 8 * MIB, 65536)
        .iter()
        .all(|&b| b == 0xa5));
    assert!(read_region(&exported, 63 * MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0x11));
}

#[test]
fn rbd_discard_reaches_the_pool_only_with_discard_unmap() {
    if skip() {
        return;
    }
    let c = Ceph::shared();
    let img = image(&c, 32);
    let fill = ["write -P 0x77 0 32M", "flush"];
    {
        let d = export(&c, &img, "");
        qemu_io(&uri(&d), &fill);
    }
    let full = c.used(&img);
    assert!(full >= 32 * MIB, "used {full}");
    // discard=ignore (the default): the request succeeds, nothing is freed.
    {
        let d = export(&c, &img, "");
        qemu_io(&uri(&d), &["discard 0 16M", "flush", "read -P 0x77 0 32M"]);
    }
    assert_eq!(c.used(&img), full);
    // discard=unmap: the objects go, and read back as zeroes.
    {
        let d = export(&c, &img, ",discard=unmap");
        let u = uri(&d);
        qemu_io(
            &u,
            &[
                "discard 0 16M",
                "flush",
                "read -P 0 0 16M",
                "read -P 0x77 16M 16M",
            ],
        );
        // Block status comes from the object map: the discarded half is a hole.
        let map = run("nbdinfo", &["--map", &u], TOOL_TIMEOUT).success("nbdinfo --map");
        let first = map.stdout.lines().next().unwrap_or_default().to_string();
        assert!(first.contains("hole,zero"), "{}", map.stdout);
    }
    let after = c.used(&img);
    assert!(
        after <= full - 16 * MIB,
        "used {after} of {full} after discard"
    );
}

#[test]
fn rbd_open_errors_are_clear_and_the_daemon_keeps_serving() {
    if skip() {
        return;
    }
    let c = Ceph::shared();
    let img = image(&c, 8);
    let conf = c.conf.to_string_lossy().to_string();
    let bad_key = c.dir().join("bad.key");
    std::fs::write(&bad_key, "AQBVv5hmAAAAABAAj2OXwq+0ctL9Oi7jj4jJcg==").expect("bad key");
    let conversation = |q: &mut Qmp| -> Vec<String> {
        q.ok(
            "object-add",
            json!({"qom-type": "secret", "id": "good", "file": c.key_file, "format": "base64"}),
        );
        q.ok(
            "object-add",
            json!({"qom-type": "secret", "id": "bad", "file": bad_key, "format": "base64"}),
        );
        let node = |name: &str, pool: &str, image: &str, secret: &str| {
            json!({"driver": "rbd", "node-name": name, "pool": pool, "image": image,
                   "conf": conf, "user": CEPH_USER, "key-secret": secret})
        };
        let errs: Vec<String> = [
            node("r1", CEPH_POOL, &img, "bad"),
            node("r2", "nopool", &img, "good"),
            node("r3", CEPH_POOL, "noimage", "good"),
            node("r4", CEPH_POOL, &img, "nosecret"),
        ]
        .into_iter()
        .map(|n| {
            let e = q.err("blockdev-add", n);
            assert_eq!(e.class, "GenericError");
            e.desc
        })
        .collect();
        q.ok("blockdev-add", node("r5", CEPH_POOL, &img, "good"));
        errs
    };
    let d = Daemon::start(
        scratch(),
        &[
            "--blockdev",
            "driver=null-co,node-name=n0,size=1048576",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=n0,name=n0",
        ],
    );
    let mut q = d.qmp();
    let ours = conversation(&mut q);
    assert_eq!(
        ours,
        [
            "error connecting: Permission denied".to_string(),
            "error opening pool nopool: No such file or directory".to_string(),
            "error reading header from noimage: No such file or directory".to_string(),
            "No secret with id 'nosecret'".to_string(),
        ]
    );
    // Still serving the export it had, and the good node works.
    let size = run(
        "nbdinfo",
        &["--size", &nbd_uri("n0", &d.path("nbd.sock"))],
        TOOL_TIMEOUT,
    )
    .success("nbdinfo");
    assert_eq!(size.stdout.trim(), MIB.to_string());
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "e1", "node-name": "r5", "name": "r5"}),
    );
    let size = run(
        "nbdinfo",
        &["--size", &nbd_uri("r5", &d.path("nbd.sock"))],
        TOOL_TIMEOUT,
    )
    .success("nbdinfo rbd");
    assert_eq!(size.stdout.trim(), (8 * MIB).to_string());
    // QSD (with qemu-block-extra) gives the same answers.
    if !skip_unless_comparing("rbd errors vs QSD") && qsd_has_rbd() {
        let qd = Daemon::start_bin(Path::new(daemon::QSD_BIN), scratch(), &[]);
        let mut qq = qd.qmp();
        assert_eq!(conversation(&mut qq), ours);
    }
}

fn qsd_has_rbd() -> bool {
    let found = std::fs::read_dir("/usr/lib/x86_64-linux-gnu/qemu")
        .map(|d| d.flatten().any(|e| e.file_name() == "block-rbd.so"))
        .unwrap_or(false);
    if !found {
        eprintln!("SKIP: QSD's rbd driver (qemu-block-extra) is not installed");
    }
    found
}
