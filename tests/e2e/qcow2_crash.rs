//! kill -9 of a daemon in the middle of allocating writes to a qcow2
//! image (partial clusters and runs, FUA or write+FLUSH, all in flight):
//! `qemu-img check` finds no corruption after each life (leaks allowed,
//! as with QEMU), and every acknowledged write is there, through the next
//! daemon and through `qemu-img convert` at the end.

use crate::qcow2::{check, s, start, tool};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// One life: verify the previous lives' acknowledged writes, issue writes
/// (FUA, or plain then FLUSH) at fresh slots, all in flight, SIGKILL after
/// some are acknowledged. Prints {"bad": [...], "acked": [...]}.
const LIFE_PY: &str = r#"
import nbd, sys, json, os, signal, random, struct
uri, pid, mode, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
slots, prev = json.loads(sys.argv[5]), json.loads(sys.argv[6])
def data(s, i, ln):
    return struct.pack(">QQ", s, i) * (ln // 16)
h = nbd.NBD()
h.connect_uri(uri)
bad = [w for w in prev if h.pread(w[3], w[2]) != data(w[0], w[1], w[3])]
rng = random.Random(seed)
acked, pending, bufs = [], {}, []
flags = nbd.CMD_FLAG_FUA if mode == "fua" else 0
for i, slot in enumerate(slots):
    # Partial clusters and runs of clusters: allocation with COW.
    ln = 4096 * rng.randint(1, 40)
    off = slot * 262144 + 4096 * rng.randint(0, 8)
    b = nbd.Buffer.from_bytearray(bytearray(data(seed, i, ln)))
    bufs.append(b)
    pending[h.aio_pwrite(b, off, flags=flags)] = [seed, i, off, ln]
kill_at = len(slots) if mode == "flush" else rng.randint(len(slots) // 2, len(slots))
while len(acked) < kill_at:
    h.poll(-1)
    for c in list(pending):
        if h.aio_command_completed(c):
            acked.append(pending.pop(c))
if mode == "flush":
    h.flush()
os.kill(pid, signal.SIGKILL)
print(json.dumps({"bad": bad, "acked": acked}))
"#;

#[test]
fn qcow2_kill9_during_allocation_keeps_image_consistent() {
    if skip_on_qsd("qcow2 crash loop uses ringstor's image lifetimes") {
        return;
    }
    let keep = scratch();
    let img = keep.path().join("crash.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &s(&img), "64M"],
    );
    let mut rng = Rng::new(7);
    let mut free: Vec<u64> = (0..256).collect();
    let mut all: Vec<Value> = Vec::new();
    let mut prev = Value::Array(vec![]);
    for life in 0..12u64 {
        let mode = if life % 2 == 0 { "fua" } else { "flush" };
        let mut slots = Vec::new();
        for _ in 0..12 {
            let k = rng.below(free.len() as u64) as usize;
            slots.push(free.swap_remove(k));
        }
        let args = vec![
            "--nbd-server".to_string(),
            "addr.type=unix,addr.path={dir}/nbd.sock".into(),
            "--blockdev".into(),
            format!(
                "driver=qcow2,node-name=d,file.driver=file,file.filename={}",
                img.display()
            ),
            "--export".into(),
            "type=nbd,id=e,node-name=d,name=d,writable=on".into(),
        ];
        let mut d = start(&binary(), &args);
        let uri = nbd_uri("d", &d.path("nbd.sock"));
        let argv = [
            uri.as_str(),
            &d.pid().to_string(),
            mode,
            &life.to_string(),
            &json!(slots).to_string(),
            &prev.to_string(),
        ];
        let out = run_python(LIFE_PY, &argv).success("crash life");
        let v: Value = serde_json::from_str(out.stdout.trim()).expect("life JSON");
        assert_eq!(v["bad"], json!([]), "life {life}: acknowledged writes lost");
        assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "killed");
        // Leaks are allowed (exit 3), corruption (exit 2) is not.
        let c = check(&img);
        assert!(
            matches!(c.status.code(), Some(0) | Some(3)) && !c.stdout.contains("ERROR"),
            "life {life}: qemu-img check: {}{}",
            c.stdout,
            c.stderr
        );
        let acked = v["acked"].as_array().expect("acked").clone();
        all.extend(acked.iter().cloned());
        prev = Value::Array(acked);
    }
    // Everything acknowledged in every life, as qemu-img reads the image.
    let raw = keep.path().join("crash.raw");
    tool("qemu-img", &["convert", "-O", "raw", &s(&img), &s(&raw)]);
    for w in &all {
        let f = |k: usize| w[k].as_u64().expect("field");
        let mut unit = f(0).to_be_bytes().to_vec();
        unit.extend_from_slice(&f(1).to_be_bytes());
        let want = unit.repeat(f(3) as usize / 16);
        assert!(
            read_region(&raw, f(2), f(3) as usize) == want,
            "acked write {w} missing"
        );
    }
    eprintln!(
        "qcow2 crash loop: {} acknowledged writes verified",
        all.len()
    );
}
