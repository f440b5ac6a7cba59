//! QSD's answers for the same FUSE commands and file operations, compared
//! where they are errors: QMP error classes (descs printed when they
//! differ), and the errno of every failing file operation.

use super::*;

/// Starts `bin` with `disk0` on a 4 MiB image in a fresh directory that
/// also holds a regular file `mnt`, a second one `mnt2` and a directory `dir`.
fn start(bin: &Path) -> Daemon {
    let dir = scratch();
    make_filled(&dir.path().join("disk.img"), 4 * MIB, 8);
    fs::write(dir.path().join("mnt"), b"").unwrap();
    fs::write(dir.path().join("mnt2"), b"").unwrap();
    fs::create_dir(dir.path().join("dir")).unwrap();
    Daemon::start_bin(
        bin,
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--blockdev",
            "driver=file,node-name=ro,filename={dir}/disk.img,read-only=on,locking=off",
        ],
    )
}

fn add(extra: Value) -> Value {
    let mut args = json!({"type": "fuse", "id": "e1", "node-name": "disk0"});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    json!({"execute": "block-export-add", "arguments": args})
}

#[test]
fn fuse_qmp_errors_match_qsd() {
    if skip_unless_comparing("FUSE export errors") {
        return;
    }
    let conversation = [
        add(json!({})),
        add(json!({"mountpoint": "nonexist"})),
        add(json!({"mountpoint": "dir"})),
        add(json!({"mountpoint": "mnt", "allow-other": "bogus"})),
        add(json!({"mountpoint": "mnt", "growable": "yes"})),
        add(json!({"mountpoint": "mnt", "bogus": 1})),
        add(json!({"mountpoint": "mnt", "node-name": "nope"})),
        add(json!({"mountpoint": "mnt", "node-name": "ro", "writable": true})),
        // Mounted; the second on the same path is refused.
        add(json!({"mountpoint": "mnt", "id": "e0", "writable": true})),
        add(json!({"mountpoint": "mnt"})),
        add(json!({"mountpoint": "mnt2", "id": "e0"})),
        json!({"execute": "query-block-exports"}),
        json!({"execute": "block-export-del", "arguments": {"id": "nope"}}),
        json!({"execute": "block-export-del", "arguments": {"id": "e0", "mode": "bogus"}}),
    ];
    let run_on = |bin: &Path| -> (Vec<Value>, PathBuf) {
        let d = start(bin);
        let mut q = d.qmp();
        let replies = conversation.iter().map(|m| q.send(m)).collect();
        let mnt = d.path("mnt");
        let _ = q.send(&json!({"execute": "quit"}));
        let mut d = d;
        d.wait_exit(Duration::from_secs(10));
        (replies, mnt)
    };
    let (ours, our_mnt) = run_on(&binary());
    let (qsd, qsd_mnt) = run_on(Path::new(ringstor_tests::daemon::QSD_BIN));
    assert!(wait_unmounted(&our_mnt, Duration::from_secs(2)));
    if !wait_unmounted(&qsd_mnt, Duration::from_secs(2)) {
        let _ = run("umount", &["-l", &qsd_mnt.to_string_lossy()], TOOL_TIMEOUT);
    }
    for ((m, o), r) in conversation.iter().zip(&ours).zip(&qsd) {
        match (o.get("return"), r.get("return")) {
            (Some(_), Some(_)) => {}
            (None, None) => {
                assert_eq!(o["error"]["class"], r["error"]["class"], "{m}: error class");
                if o["error"]["desc"] != r["error"]["desc"] {
                    eprintln!(
                        "NOTE {m}: desc {} vs QSD {}",
                        o["error"]["desc"], r["error"]["desc"]
                    );
                }
            }
            _ => panic!("{m}: ours {o} but QSD {r}"),
        }
    }
    // Not just the same class: the texts QSD users see.
    assert_eq!(
        ours[0]["error"]["desc"],
        "Parameter 'mountpoint' is missing"
    );
    assert_eq!(ours[1]["error"]["desc"], qsd[1]["error"]["desc"]);
    assert_eq!(ours[2]["error"]["desc"], "'dir' is not a regular file");
    assert_eq!(
        ours[9]["error"]["desc"],
        "There already is a FUSE export on 'mnt'"
    );
}

/// File operations whose answers are errors in QSD; each line is the
/// operation and the errno name (or "ok").
const OPS_PY: &str = r#"
import os, errno, sys
m = sys.argv[1]
def t(name, f):
    try:
        f(); print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
fd = os.open(m, os.O_RDWR)
sz = os.fstat(fd).st_size
t("pwrite-past-eof", lambda: os.pwrite(fd, b"abcd", sz + 4096))
t("seek-data-eof", lambda: os.lseek(fd, sz, os.SEEK_DATA))
t("seek-hole-past-eof", lambda: os.lseek(fd, sz + 1, os.SEEK_HOLE))
t("chmod-group", lambda: os.chmod(m, 0o640))
t("chown", lambda: os.chown(m, 1, 1))
t("utime", lambda: os.utime(m, (1, 1)))
t("listdir", lambda: os.listdir(m))
t("getxattr", lambda: os.getxattr(m, "user.x"))
t("rename", lambda: os.rename(m, m + ".x"))
t("unlink", lambda: os.unlink(m))
t("punch-no-keep", lambda: os.posix_fallocate(fd, 0, 0))
"#;

#[test]
fn fuse_file_errors_match_qsd() {
    if skip_unless_comparing("FUSE file operation errors") {
        return;
    }
    let run_on = |bin: &Path, extra: &str| -> String {
        let d = start(bin);
        let mut q = d.qmp();
        let mut args = json!({"type": "fuse", "id": "e0", "node-name": "disk0",
            "mountpoint": d.path("mnt"), "writable": true, "allow-other": "off"});
        if !extra.is_empty() {
            args[extra] = json!(false);
        }
        q.ok("block-export-add", args);
        let out = py(OPS_PY, &d.path("mnt").to_string_lossy());
        let _ = q.send(&json!({"execute": "quit"}));
        let mut d = d;
        d.wait_exit(Duration::from_secs(10));
        if !wait_unmounted(&d.path("mnt"), Duration::from_secs(2)) {
            let _ = run(
                "umount",
                &["-l", &d.path("mnt").to_string_lossy()],
                TOOL_TIMEOUT,
            );
        }
        out
    };
    let qsd = run_on(Path::new(ringstor_tests::daemon::QSD_BIN), "");
    let ours = run_on(&binary(), "io-uring");
    assert_eq!(ours, qsd, "file operation answers differ from QSD");
    assert!(qsd.contains("chmod-group EPERM"), "{qsd}");
}
