//! qcow2 nodes over NBD, against QEMU's own tools and QSD on the same
//! images: contents as `qemu-img convert -O raw` sees them, block status
//! and allocation depth as QSD reports them, writes/discard/zeroes giving
//! the same image as through QSD (`qemu-img compare`), `qemu-img check`
//! clean after every run, fio verify; QSD's errors for images that do not
//! open. Kill -9 during allocating writes is in `qcow2_crash`.

use ringstor_tests::daemon::QSD_BIN;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

pub(crate) fn tool(prog: &str, args: &[&str]) -> Ran {
    run(prog, args, TOOL_TIMEOUT).success(prog)
}

pub(crate) fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `qemu-img check`, once the image's locks are gone: a ring's files are
/// released by the kernel shortly after its process exits, not at once.
pub(crate) fn check(img: &Path) -> Ran {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = run("qemu-img", &["check", &s(img)], TOOL_TIMEOUT);
        if !r.stderr.contains("lock") || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `qemu-img check` exits 0: no corruption and no leak.
fn check_clean(img: &Path) {
    check(img).success("qemu-img check");
}

/// Images of every kind the issue lists, made and filled by QEMU's tools,
/// in `dir`; returns (name, path).
fn make_images(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let p = |n: &str| dir.join(n);
    let create = |name: &str, opts: &str, size: &str| {
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                opts,
                &s(&p(name)),
                size,
            ],
        );
    };
    let io = |name: &str, cmds: &[&str]| {
        let mut a: Vec<String> = Vec::new();
        for c in cmds {
            a.push("-c".into());
            a.push((*c).into());
        }
        a.push(s(&p(name)));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        tool("qemu-io", &refs);
    };
    let fill = [
        "write -P 0x11 0 100k",
        "write -P 0x22 3M 1M",
        "write -z 5M 128k",
        "write -P 0x33 7M 3k",
    ];
    create("c64k.qcow2", "cluster_size=64k", "16M");
    io("c64k.qcow2", &fill);
    create("c2m.qcow2", "cluster_size=2M", "16M");
    io("c2m.qcow2", &fill);
    create("lazy.qcow2", "lazy_refcounts=on", "16M");
    io("lazy.qcow2", &fill);
    create("base.qcow2", "cluster_size=64k", "12M");
    io("base.qcow2", &["write -P 0x5a 0 12M"]);
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &s(&p("top.qcow2")),
            "16M",
        ],
    );
    io("top.qcow2", &["write -P 0x77 1M 100k", "write -z 2M 64k"]);
    let raw = p("src.raw");
    let data: Vec<u8> = (0..4 * MIB as usize)
        .map(|i| ((i / 7) % 251) as u8)
        .collect();
    std::fs::write(&raw, data).expect("src.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            &s(&raw),
            &s(&p("comp.qcow2")),
        ],
    );
    vec![
        ("c64k", p("c64k.qcow2")),
        ("c2m", p("c2m.qcow2")),
        ("lazy", p("lazy.qcow2")),
        ("top", p("top.qcow2")),
        ("comp", p("comp.qcow2")),
    ]
}

/// `--blockdev`/`--export` pairs for `images`; the file child given by
/// name for some and inline for others.
fn export_args(images: &[(&str, PathBuf)], writable: bool, extra: &str) -> Vec<String> {
    let mut a = vec![
        "--nbd-server".to_string(),
        "addr.type=unix,addr.path={dir}/nbd.sock".into(),
    ];
    for (i, (name, path)) in images.iter().enumerate() {
        if i % 2 == 0 {
            a.push("--blockdev".into());
            a.push(format!(
                "driver=file,node-name=f-{name},filename={}{extra}",
                path.display()
            ));
            a.push("--blockdev".into());
            a.push(format!("driver=qcow2,node-name={name},file=f-{name}"));
        } else {
            a.push("--blockdev".into());
            a.push(format!(
                "driver=qcow2,node-name={name},file.driver=file,file.filename={}{}",
                path.display(),
                extra.replace(",cache", ",file.cache")
            ));
        }
        a.push("--export".into());
        a.push(format!(
            "type=nbd,id=e-{name},node-name={name},name={name},allocation-depth=on,writable={}",
            if writable { "on" } else { "off" }
        ));
    }
    a
}

pub(crate) fn start(bin: &Path, args: &[String]) -> Daemon {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_bin(bin, scratch(), &refs)
}

/// Stops the daemon through QMP and waits, so images are closed cleanly.
fn quit(mut d: Daemon) {
    let mut q = d.qmp();
    let _ = q.execute("quit", json!({}));
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "daemon did not quit"
    );
}

fn maps(uri: &str) -> (String, String) {
    let base = tool("nbdinfo", &["--map", uri]).stdout;
    let depth = tool("nbdinfo", &["--map=qemu:allocation-depth", uri]).stdout;
    (base, depth)
}

#[test]
fn qcow2_reads_and_maps_like_qemu() {
    let keep = scratch();
    let images = make_images(keep.path());
    for (name, path) in &images {
        let want = keep.path().join(format!("{name}.ref.raw"));
        tool("qemu-img", &["convert", "-O", "raw", &s(path), &s(&want)]);
    }
    let d = start(&binary(), &export_args(&images, false, ""));
    let mut ours = Vec::new();
    for (name, _) in &images {
        let uri = nbd_uri(name, &d.path("nbd.sock"));
        let got = d.path(&format!("{name}.nbd.raw"));
        tool("nbdcopy", &[&uri, &s(&got)]);
        let want = keep.path().join(format!("{name}.ref.raw"));
        assert!(
            file_sha256(&got) == file_sha256(&want),
            "{name}: NBD contents differ from qemu-img convert"
        );
        // qemu-io over NBD, on a region the image wrote.
        let at = if *name == "top" { "1M" } else { "3M" };
        let pat = if *name == "top" { "0x77" } else { "0x22" };
        if *name != "comp" {
            tool(
                "qemu-io",
                &[
                    "-f",
                    "raw",
                    "-r",
                    "-c",
                    &format!("read -P {pat} {at} 64k"),
                    &uri,
                ],
            );
        }
        ours.push(maps(&uri));
    }
    let q = d.qmp_path().to_path_buf();
    let mut qmp = Qmp::connect(&q);
    let nodes = qmp.ok("query-named-block-nodes", json!({}));
    let top = nodes
        .as_array()
        .and_then(|l| l.iter().find(|n| n["node-name"] == "top"))
        .expect("top node");
    assert_eq!(top["drv"], "qcow2");
    assert_eq!(top["backing_file_depth"], 1);
    assert_eq!(top["image"]["backing-filename"], "base.qcow2");
    assert_eq!(top["image"]["format-specific"]["type"], "qcow2");
    assert_eq!(top["image"]["backing-image"]["format"], "qcow2");
    drop(qmp);
    quit(d);
    for (_, path) in &images {
        check_clean(path);
    }
    if skip_unless_comparing("qcow2 block status against QSD") {
        return;
    }
    let qsd = start(Path::new(QSD_BIN), &export_args(&images, false, ""));
    for ((name, _), (base, depth)) in images.iter().zip(&ours) {
        let uri = nbd_uri(name, &qsd.path("nbd.sock"));
        let (qb, qd) = maps(&uri);
        assert_eq!(base, &qb, "{name}: base:allocation differs from QSD");
        assert_eq!(depth, &qd, "{name}: qemu:allocation-depth differs from QSD");
    }
}

/// Writes, partial-cluster writes over a backing file, discard and
/// write-zeroes through NBD, the same on two copies of an image.
const WRITES_PY: &str = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def pat(n, s):
    return bytes(((i * 7 + s) & 0xff) | 1 for i in range(n))
h.pwrite(pat(4096, 1), 0)
h.pwrite(pat(200000, 2), 70000)
h.pwrite(pat(3 << 20, 3), 5 << 20, nbd.CMD_FLAG_FUA)
h.pwrite(pat(512, 4), 1000)
h.pwrite(pat(65536 * 3, 5), 9 << 20)
h.trim(2 * 65536, 65536 * 4 + 100)
h.zero(9 << 20, 65536 + 4096)
h.zero(12 << 20, 3 * 65536, nbd.CMD_FLAG_NO_HOLE)
h.flush()
h.pwrite(pat(65536, 6), 14 << 20)
h.shutdown()
"#;

#[test]
fn qcow2_writes_match_qsd_and_check_clean() {
    for backing in [false, true] {
        let keep = scratch();
        let dir = keep.path();
        let (ours, theirs) = (dir.join("ours.qcow2"), dir.join("qsd.qcow2"));
        if backing {
            let base = dir.join("base.qcow2");
            tool(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", &s(&base), "16M"],
            );
            tool("qemu-io", &["-c", "write -P 0x5a 0 16M", &s(&base)]);
            for img in [&ours, &theirs] {
                tool(
                    "qemu-img",
                    &[
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-b",
                        "base.qcow2",
                        "-F",
                        "qcow2",
                        &s(img),
                    ],
                );
            }
        } else {
            for img in [&ours, &theirs] {
                tool("qemu-img", &["create", "-q", "-f", "qcow2", &s(img), "16M"]);
            }
        }
        let run_on = |bin: &Path, img: &Path| {
            let args = vec![
                "--nbd-server".to_string(),
                "addr.type=unix,addr.path={dir}/nbd.sock".into(),
                "--blockdev".into(),
                format!(
                    "driver=file,node-name=f,filename={},discard=unmap",
                    img.display()
                ),
                "--blockdev".into(),
                "driver=qcow2,node-name=d,file=f,discard=unmap".into(),
                "--export".into(),
                "type=nbd,id=e,node-name=d,name=d,writable=on".into(),
            ];
            let d = start(bin, &args);
            run_python(WRITES_PY, &[&nbd_uri("d", &d.path("nbd.sock"))]).success("writes");
            quit(d);
            check_clean(img);
        };
        run_on(&binary(), &ours);
        if skip_unless_comparing("qcow2 writes against QSD") {
            continue;
        }
        run_on(Path::new(QSD_BIN), &theirs);
        tool("qemu-img", &["compare", &s(&ours), &s(&theirs)]);
    }
}

#[test]
fn qcow2_fio_verify_random_writes() {
    let keep = scratch();
    let img = keep.path().join("fio.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=64k",
            &s(&img),
            "64M",
        ],
    );
    let args = vec![
        "--object".to_string(),
        "iothread,id=io0".into(),
        "--object".into(),
        "iothread,id=io1".into(),
        "--nbd-server".into(),
        "addr.type=unix,addr.path={dir}/nbd.sock".into(),
        "--blockdev".into(),
        format!("driver=qcow2,node-name=d,file.driver=file,file.filename={}", img.display()),
        "--export".into(),
        // A list of iothreads is ringstor's extension; QSD takes one.
        if is_qsd() {
            r#"{"type":"nbd","id":"e","node-name":"d","name":"d","writable":true,"iothread":"io0"}"#
        } else {
            r#"{"type":"nbd","id":"e","node-name":"d","name":"d","writable":true,"iothread":["io0","io1"]}"#
        }
        .into(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(scratch(), &refs);
    let uri = nbd_uri("d", &d.path("nbd.sock"));
    // Two connections land on two iothreads: allocation races between them.
    let job = [
        "--name=v",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        "--rw=randwrite",
        "--bsrange=4k-192k",
        "--iodepth=16",
        "--numjobs=2",
        "--offset_increment=32M",
        "--size=32M",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--do_verify=1",
        "--verify_state_save=0",
        "--group_reporting",
    ];
    let out = tool("fio", &job);
    assert!(!out.stdout.contains("verify: bad"), "{}", out.stdout);
    quit(d);
    check_clean(&img);
}

/// `blockdev-add` of qcow2 nodes that cannot open: the same error class
/// and text as QSD (the encrypted image included), and a working open
/// with `backing: null` and with an inline backing node.
#[test]
fn qcow2_blockdev_add_errors_match_qsd() {
    let conversation = [
        json!({"driver": "qcow2", "node-name": "q0"}),
        json!({"driver": "qcow2", "node-name": "q0", "file": "nosuch"}),
        json!({"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "filename": "plain.img"}}),
        json!({"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "filename": "enc.qcow2"}}),
        json!({"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "filename": "orphan.qcow2"}}),
        json!({"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "filename": "top.qcow2"}, "backing": "nosuch"}),
        json!({"driver": "qcow2", "node-name": "q0", "file": {"driver": "file", "filename": "top.qcow2"}, "bogus": 1}),
        json!({"driver": "qcow2", "node-name": "q1", "file": {"driver": "file", "filename": "top.qcow2"}, "backing": null}),
        json!({"driver": "qcow2", "node-name": "q2", "read-only": true,
               "file": {"driver": "file", "filename": "top2.qcow2", "read-only": true},
               "backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "base.qcow2"}}}),
    ];
    let run_on = |bin: &Path| -> Vec<Value> {
        let dir = scratch();
        let p = |n: &str| s(&dir.path().join(n));
        std::fs::write(dir.path().join("plain.img"), vec![7u8; 65536]).expect("plain");
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "--object",
                "secret,id=s0,data=x",
                "-o",
                "encrypt.format=luks,encrypt.key-secret=s0",
                &p("enc.qcow2"),
                "1M",
            ],
        );
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                "gone.qcow2",
                "-F",
                "qcow2",
                &p("orphan.qcow2"),
                "1M",
            ],
        );
        tool(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", &p("base.qcow2"), "1M"],
        );
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                &p("top.qcow2"),
            ],
        );
        std::fs::copy(dir.path().join("top.qcow2"), dir.path().join("top2.qcow2")).expect("top2");
        let d = Daemon::start_bin(bin, dir, &[]);
        let mut q = d.qmp();
        conversation
            .iter()
            .map(|m| q.send(&json!({"execute": "blockdev-add", "arguments": m})))
            .collect()
    };
    let ours = run_on(&binary());
    assert!(ours[7].get("return").is_some(), "backing null: {}", ours[7]);
    assert!(
        ours[8].get("return").is_some(),
        "inline backing: {}",
        ours[8]
    );
    assert_eq!(
        ours[3]["error"]["desc"],
        "Parameter 'encrypt.key-secret' is required for cipher"
    );
    if skip_unless_comparing("qcow2 blockdev-add errors against QSD") {
        return;
    }
    let qsd = run_on(Path::new(QSD_BIN));
    for ((m, o), r) in conversation.iter().zip(&ours).zip(&qsd) {
        assert_eq!(
            o.get("return").is_some(),
            r.get("return").is_some(),
            "{m}: ours {o}, QSD {r}"
        );
        assert_eq!(o["error"]["class"], r["error"]["class"], "{m}");
        assert_eq!(o["error"]["desc"], r["error"]["desc"], "{m}");
    }
}
