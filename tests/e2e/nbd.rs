//! NBD data path with real clients (nbdinfo, nbdcopy, qemu-img, qemu-io,
//! nbdsh/python3-libnbd, fio), each against an export set up on the command
//! line and one set up over QMP.

use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The same writable export `disk0` set up both ways. `opts` are
/// `(key, value)` export options; "on"/"off" become JSON booleans over QMP.
fn both(size: u64, fill: Fill, opts: &[(&str, &str)]) -> Vec<(&'static str, DiskDaemon)> {
    let cli_opts: Vec<String> = opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut extra = serde_json::Map::new();
    for (k, v) in opts {
        let val = match *v {
            "on" => json!(true),
            "off" => json!(false),
            s => json!(s),
        };
        extra.insert(k.to_string(), val);
    }
    vec![
        ("cli", cli_export(size, fill, &cli_opts.join(","))),
        ("qmp", qmp_export(size, fill, Value::Object(extra))),
    ]
}

fn nbdinfo(args: &[&str]) -> Ran {
    run("nbdinfo", args, TOOL_TIMEOUT)
}

#[test]
fn nbdinfo_describes_export() {
    for (how, dd) in both(4 * MIB, Fill::Sparse, &[("description", "hello")]) {
        let uri = dd.uri("disk0");
        let out = nbdinfo(&["--json", &uri]).success("nbdinfo --json");
        let v: Value = serde_json::from_str(&out.stdout).expect("nbdinfo JSON");
        assert_eq!(v["protocol"], "newstyle-fixed", "{how}");
        assert_eq!(v["structured"], true, "{how}");
        let e = &v["exports"][0];
        assert_eq!(e["export-name"], "disk0", "{how}");
        assert_eq!(e["description"], "hello", "{how}");
        assert_eq!(e["export-size"], json!(4 * MIB), "{how}");
        assert!(e["contexts"]
            .as_array()
            .expect("contexts")
            .contains(&json!("base:allocation")));
        for flag in [
            "can_flush",
            "can_fua",
            "can_trim",
            "can_zero",
            "can_multi_conn",
        ] {
            assert_eq!(e[flag], true, "{how}: {flag} in {e}");
        }
        assert_eq!(e["is_read_only"], false, "{how}");
        assert_eq!(e["is_rotational"], false, "{how}");
        // nbdinfo --can/--is exit 0 for true, 2 for false.
        for c in ["write", "flush", "trim", "zero", "fua", "multi-conn"] {
            let r = nbdinfo(&["--can", c, &uri]);
            assert_eq!(r.status.code(), Some(0), "{how}: --can {c}: {}", r.stderr);
        }
        for i in ["rotational", "readonly"] {
            let r = nbdinfo(&["--is", i, &uri]);
            assert_eq!(r.status.code(), Some(2), "{how}: --is {i}: {}", r.stderr);
        }
        let size = nbdinfo(&["--size", &uri]).success("nbdinfo --size");
        assert_eq!(size.stdout.trim(), (4 * MIB).to_string(), "{how}");
        let list_uri = format!("nbd+unix://?socket={}", dd.nbd_sock().display());
        let list = nbdinfo(&["--list", "--json", &list_uri]).success("nbdinfo --list");
        let v: Value = serde_json::from_str(&list.stdout).expect("list JSON");
        let names: Vec<&Value> = v["exports"]
            .as_array()
            .expect("exports")
            .iter()
            .map(|e| &e["export-name"])
            .collect();
        assert_eq!(names, vec![&json!("disk0")], "{how}");
    }
}

#[test]
fn nbdinfo_map_shows_holes_and_data() {
    for (how, dd) in both(4 * MIB, Fill::Sparse, &[]) {
        write_at(&dd.img, MIB, &pattern(4096, 3));
        let out = nbdinfo(&["--map", "--json", &dd.uri("disk0")]).success("nbdinfo --map");
        let v: Value = serde_json::from_str(&out.stdout).expect("map JSON");
        let extents: Vec<(u64, u64, u64)> = v
            .as_array()
            .expect("map array")
            .iter()
            .map(|e| {
                let n = |k: &str| e[k].as_u64().expect("extent number");
                (n("offset"), n("length"), n("type"))
            })
            .collect();
        assert_eq!(
            extents,
            vec![(0, MIB, 3), (MIB, 4096, 0), (MIB + 4096, 3 * MIB - 4096, 3)],
            "{how}"
        );
    }
}

#[test]
fn allocation_depth_context() {
    for (how, dd) in both(2 * MIB, Fill::Sparse, &[("allocation-depth", "on")]) {
        let uri = dd.uri("disk0");
        let out = nbdinfo(&["--json", &uri]).success("nbdinfo --json");
        let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
        let ctx = v["exports"][0]["contexts"].as_array().expect("contexts");
        assert!(
            ctx.contains(&json!("qemu:allocation-depth")),
            "{how}: {ctx:?}"
        );
        let map = nbdinfo(&["--map=qemu:allocation-depth", &uri]).success("map depth");
        let fields: Vec<&str> = map.stdout.split_whitespace().collect();
        assert_eq!(fields, ["0", "2097152", "1", "local"], "{how}");
    }
}

#[test]
fn nbdcopy_in_and_out() {
    for (how, dd) in both(4 * MIB, Fill::Sparse, &[]) {
        let src = dd.d.path("src.img");
        make_filled(&src, 4 * MIB, 11);
        let uri = dd.uri("disk0");
        run("nbdcopy", &[&src.to_string_lossy(), &uri], TOOL_TIMEOUT).success("nbdcopy in");
        assert_eq!(
            file_sha256(&dd.img),
            file_sha256(&src),
            "{how}: image after copy in"
        );
        let out = dd.d.path("out.img");
        run("nbdcopy", &[&uri, &out.to_string_lossy()], TOOL_TIMEOUT).success("nbdcopy out");
        assert_eq!(file_sha256(&out), file_sha256(&src), "{how}: copy out");
    }
}

#[test]
fn qemu_img_info_convert_compare() {
    for (how, dd) in both(4 * MIB, Fill::Sparse, &[]) {
        let uri = dd.uri("disk0");
        let info = run("qemu-img", &["info", "--output=json", &uri], TOOL_TIMEOUT)
            .success("qemu-img info");
        let v: Value = serde_json::from_str(&info.stdout).expect("qemu-img info JSON");
        assert_eq!(v["virtual-size"], json!(4 * MIB), "{how}");
        let src = dd.d.path("src.img");
        make_filled(&src, 4 * MIB, 5);
        let s = src.to_string_lossy();
        let args = ["convert", "-n", "-f", "raw", "-O", "raw", &s, &uri];
        run("qemu-img", &args, TOOL_TIMEOUT).success("qemu-img convert in");
        let cmp = ["compare", "-f", "raw", "-F", "raw", &s, &uri];
        run("qemu-img", &cmp, TOOL_TIMEOUT).success("qemu-img compare");
        let out = dd.d.path("out.img");
        let o = out.to_string_lossy();
        let args = ["convert", "-f", "raw", "-O", "raw", &uri, &o];
        run("qemu-img", &args, TOOL_TIMEOUT).success("qemu-img convert out");
        assert_eq!(file_sha256(&out), file_sha256(&src), "{how}");
        write_at(&dd.img, 100, b"x");
        let r = run("qemu-img", &cmp, TOOL_TIMEOUT);
        assert_eq!(r.status.code(), Some(1), "{how}: compare sees a difference");
    }
}

fn qemu_io(uri: &str, cmds: &[&str]) -> Ran {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(uri);
    let r = run("qemu-io", &args, TOOL_TIMEOUT).success("qemu-io");
    assert!(
        !r.stdout.contains("Pattern verification failed"),
        "{}",
        r.stdout
    );
    r
}

fn all_bytes(path: &Path, off: u64, len: u64, b: u8) -> bool {
    read_region(path, off, len as usize).iter().all(|&x| x == b)
}

#[test]
fn qemu_io_patterns_reach_the_file() {
    for (how, dd) in both(MIB, Fill::Pattern(9), &[]) {
        let uri = dd.uri("disk0");
        qemu_io(
            &uri,
            &[
                "write -P 0xab 0 64k",
                "write -z 64k 64k",
                "write -P 0xcd -f 192k 4k",
                "discard 256k 64k",
                "flush",
                "read -P 0xab 0 64k",
                "read -P 0 64k 64k",
                "read -P 0xcd 192k 4k",
            ],
        );
        assert!(all_bytes(&dd.img, 0, 64 * KIB, 0xab), "{how}: write");
        assert!(all_bytes(&dd.img, 64 * KIB, 64 * KIB, 0), "{how}: write -z");
        assert!(
            all_bytes(&dd.img, 192 * KIB, 4 * KIB, 0xcd),
            "{how}: FUA write"
        );
        // Untouched data stays.
        let orig = pattern(MIB as usize, 9);
        let tail = read_region(&dd.img, 512 * KIB, 64 * KIB as usize);
        assert_eq!(tail, orig[512 * KIB as usize..576 * KIB as usize], "{how}");
        // Discard may or may not deallocate (discard=ignore is the default);
        // what the client reads must be what the file holds.
        let r = qemu_io(&uri, &["read -v 256k 16"]);
        let file = read_region(&dd.img, 256 * KIB, 16);
        let hex: String = file.iter().map(|b| format!("{b:02x} ")).collect();
        assert!(
            r.stdout.contains(hex.trim()),
            "{how}: {} vs {hex}",
            r.stdout
        );
    }
}

#[test]
fn fio_parallel_randwrite_verify() {
    for (how, dd) in both(16 * MIB, Fill::Sparse, &[]) {
        let uri = format!("--uri={}", dd.uri("disk0"));
        let common = [
            "--name=rw",
            "--ioengine=nbd",
            uri.as_str(),
            "--rw=randwrite",
            "--bs=4k",
            "--size=4M",
            "--offset_increment=4M",
            "--numjobs=4",
            "--iodepth=8",
            "--verify=crc32c",
            // No verify state files in the working directory.
            "--verify_state_save=0",
            "--group_reporting",
        ];
        let w = run("fio", &common, TOOL_TIMEOUT).success("fio write+verify");
        assert!(!w.stdout.contains("verify:"), "{how}: {}", w.stdout);
        let mut verify = common.to_vec();
        verify.push("--verify_only");
        let v = run("fio", &verify, TOOL_TIMEOUT).success("fio verify pass");
        assert!(
            v.stderr.is_empty() || !v.stderr.contains("bad"),
            "{how}: {}",
            v.stderr
        );
    }
}
