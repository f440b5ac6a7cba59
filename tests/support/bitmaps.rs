//! Dirty-bitmap test helpers: one setup for ringstor and QSD alike, the
//! clients that read a bitmap (`nbdinfo --map`, `qemu-img map` with
//! `x-dirty-bitmap`, raw extended-header block status), and
//! [`on_both`], which runs a scenario on both daemons and compares.

use crate::daemon::{binary, is_qsd, scratch, Daemon, QSD_BIN};
use crate::nbdraw::{RawNbd, OPT_EXTENDED_HEADERS, REPLY_FLAG_DONE, REP_ACK};
use crate::qmp::{Qmp, QmpError};
use crate::util::{make_sparse, nbd_uri, run, Ran, TOOL_TIMEOUT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A dirty or clean run: `(offset, length, dirty)`.
pub type Run = (u64, u64, bool);

/// A daemon with node `disk0` on `{dir}/disk.img` (`discard=unmap`, so QSD
/// passes trims down as ringstor does), iothreads `io0` and `io1`, and an
/// NBD server on `{dir}/nbd.sock`.
pub struct BitmapDaemon {
    pub d: Daemon,
    pub q: Qmp,
    pub img: PathBuf,
    /// The daemon is QSD (which takes one `iothread` per export).
    pub qsd: bool,
}

impl BitmapDaemon {
    /// Starts `bin` with a sparse image of `size` bytes.
    pub fn start(bin: &Path, size: u64) -> BitmapDaemon {
        Self::start_with(
            bin,
            size,
            &["driver=file,node-name=disk0,filename={dir}/disk.img,discard=unmap"],
            |_| {},
        )
    }

    /// Starts `bin` with other `--blockdev`s (the top one named `disk0`)
    /// over `{dir}/disk.img`, which `prepare` may remake first.
    pub fn start_with(
        bin: &Path,
        size: u64,
        blockdevs: &[&str],
        prepare: impl Fn(&Path),
    ) -> BitmapDaemon {
        let dir = scratch();
        let img = dir.path().join("disk.img");
        make_sparse(&img, size);
        prepare(&img);
        let mut args = vec!["--object", "iothread,id=io0", "--object", "iothread,id=io1"];
        for b in blockdevs {
            args.extend(["--blockdev", b]);
        }
        args.extend(["--nbd-server", "addr.type=unix,addr.path={dir}/nbd.sock"]);
        let d = Daemon::start_bin(bin, dir, &args);
        let q = d.qmp();
        let qsd = bin
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("qemu-storage-daemon"));
        BitmapDaemon { d, q, img, qsd }
    }

    /// The NBD socket.
    pub fn sock(&self) -> PathBuf {
        self.d.path("nbd.sock")
    }

    /// URI of export `name`.
    pub fn uri(&self, name: &str) -> String {
        nbd_uri(name, &self.sock())
    }

    /// A QMP command that must succeed.
    pub fn ok(&mut self, cmd: &str, args: Value) -> Value {
        self.q.ok(cmd, args)
    }

    /// A QMP command that must fail; its `desc`.
    pub fn err(&mut self, cmd: &str, args: Value) -> String {
        let QmpError { class, desc } = self.q.err(cmd, args);
        assert_eq!(class, "GenericError", "{cmd}: {desc}");
        desc
    }

    /// The reply (`return` or error `desc`) as a value for transcripts.
    pub fn reply(&mut self, cmd: &str, args: Value) -> Value {
        match self.q.execute(cmd, args) {
            Ok(v) => json!({ "return": v }),
            Err(e) => json!({ "error": e.desc }),
        }
    }

    /// `block-export-add` of `disk0` as NBD export `id` (named `id`).
    pub fn export(&mut self, id: &str, writable: bool, bitmaps: Value) -> Value {
        let mut args = json!({
            "type": "nbd", "id": id, "node-name": "disk0", "name": id,
            "writable": writable,
        });
        if !bitmaps.is_null() {
            args["bitmaps"] = bitmaps;
        }
        self.reply("block-export-add", args)
    }

    /// `block-export-del` and wait for `BLOCK_EXPORT_DELETED`.
    pub fn del_export(&mut self, id: &str) {
        self.ok("block-export-del", json!({ "id": id }));
        let ev = self
            .q
            .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(10));
        assert!(ev.is_some(), "no BLOCK_EXPORT_DELETED for {id}");
    }

    /// `dirty-bitmaps` of `node` (`Null` when it has none).
    pub fn bitmaps(&mut self, node: &str) -> Value {
        let nodes = self.ok("query-named-block-nodes", json!({}));
        nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n["node-name"] == node))
            .map(|n| n.get("dirty-bitmaps").cloned().unwrap_or(Value::Null))
            .unwrap_or_else(|| panic!("node {node} not listed: {nodes}"))
    }

    /// `count` of bitmap `name` on `disk0`.
    pub fn count(&mut self, name: &str) -> u64 {
        self.count_on("disk0", name)
    }

    /// `count` of bitmap `name` on `node`.
    pub fn count_on(&mut self, node: &str, name: &str) -> u64 {
        let list = self.bitmaps(node);
        list.as_array()
            .and_then(|l| l.iter().find(|b| b["name"] == name))
            .and_then(|b| b["count"].as_u64())
            .unwrap_or_else(|| panic!("no bitmap {name} on {node}: {list}"))
    }
}

/// `qemu-io -f raw -c CMD... URI`, which must succeed.
pub fn qemu_io(uri: &str, cmds: &[&str]) -> Ran {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(uri);
    run("qemu-io", &args, TOOL_TIMEOUT).success("qemu-io")
}

/// Runs of `qemu:dirty-bitmap:NAME` from `nbdinfo --map`.
pub fn nbdinfo_map(uri: &str, bitmap: &str) -> Vec<Run> {
    let ctx = format!("--map=qemu:dirty-bitmap:{bitmap}");
    let out = run("nbdinfo", &[&ctx, uri], TOOL_TIMEOUT).success("nbdinfo --map");
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> u64 {
                f.get(i)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad nbdinfo line {l:?}"))
            };
            (num(0), num(1), num(2) & 1 == 1)
        })
        .collect()
}

/// Runs of a bitmap from `qemu-img map` with `x-dirty-bitmap`, which
/// reports dirty ranges as unallocated ("data": false).
pub fn qemu_img_map(sock: &Path, export: &str, bitmap: &str) -> Vec<Run> {
    let opts = format!(
        "driver=nbd,export={export},server.type=unix,server.path={},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}",
        sock.display()
    );
    let out = run(
        "qemu-img",
        &["map", "--output=json", "--image-opts", &opts],
        TOOL_TIMEOUT,
    )
    .success("qemu-img map");
    let v: Value = serde_json::from_str(&out.stdout).expect("qemu-img map JSON");
    merge_runs(
        v.as_array()
            .expect("map list")
            .iter()
            .map(|e| {
                let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
                (n("start"), n("length"), e["data"] == false)
            })
            .collect(),
    )
}

/// Joins adjacent runs of the same kind.
pub fn merge_runs(runs: Vec<Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for r in runs {
        match out.last_mut() {
            Some(last) if last.2 == r.2 && last.0 + last.1 == r.0 => last.1 += r.1,
            _ => out.push(r),
        }
    }
    out
}

/// The runs a bitmap of `granularity` on `size` bytes should show after
/// writes to `ranges` (offset, length): each rounded out to granules.
pub fn expected_runs(size: u64, granularity: u64, ranges: &[(u64, u64)]) -> Vec<Run> {
    let n = size.div_ceil(granularity) as usize;
    let mut dirty = vec![false; n];
    for &(off, len) in ranges {
        if len == 0 {
            continue;
        }
        let first = (off / granularity) as usize;
        let last = ((off + len - 1) / granularity) as usize;
        dirty[first..=last.min(n - 1)].fill(true);
    }
    merge_runs(
        dirty
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let start = i as u64 * granularity;
                (start, granularity.min(size - start), d)
            })
            .collect(),
    )
}

/// Extended headers, `NBD_OPT_SET_META_CONTEXT` for `queries`, `NBD_OPT_GO`
/// on `export`; returns the connection and the selected `(id, name)`s.
pub fn raw_ext_with_contexts(
    sock: &Path,
    export: &str,
    queries: &[&str],
) -> (RawNbd, Vec<(u32, String)>) {
    let mut c = RawNbd::greet(sock, Duration::from_secs(10)).expect("NBD greeting");
    c.send_opt(OPT_EXTENDED_HEADERS, &[]);
    let r = c.read_opt_reply();
    assert_eq!(r.rtype, REP_ACK, "extended headers refused: {r:?}");
    let selected = meta_contexts(&mut c, OPT_SET_META_CONTEXT, export, queries);
    let go = c.go(export);
    assert_eq!(go.last().map(|r| r.rtype), Some(REP_ACK), "{go:?}");
    (c, selected)
}

const OPT_LIST_META_CONTEXT: u32 = 9;
const OPT_SET_META_CONTEXT: u32 = 10;
const REP_META_CONTEXT: u32 = 4;
const CMD_BLOCK_STATUS: u16 = 7;
const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;

fn meta_contexts(
    c: &mut RawNbd,
    option: u32,
    export: &str,
    queries: &[&str],
) -> Vec<(u32, String)> {
    let mut d = Vec::new();
    d.extend_from_slice(&(export.len() as u32).to_be_bytes());
    d.extend_from_slice(export.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    c.send_opt(option, &d);
    let mut out = Vec::new();
    loop {
        let r = c.read_opt_reply();
        match r.rtype {
            REP_META_CONTEXT => {
                assert!(r.data.len() >= 4, "short meta context reply {r:?}");
                let id = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]);
                out.push((id, String::from_utf8_lossy(&r.data[4..]).into_owned()));
            }
            REP_ACK => return out,
            t => panic!("meta context option refused ({t:#x}): {r:?}"),
        }
    }
}

/// Context names `NBD_OPT_LIST_META_CONTEXT` gives for `queries` on `export`.
pub fn list_contexts(sock: &Path, export: &str, queries: &[&str]) -> Vec<String> {
    let mut c = RawNbd::greet(sock, Duration::from_secs(10)).expect("NBD greeting");
    let mut names: Vec<String> = meta_contexts(&mut c, OPT_LIST_META_CONTEXT, export, queries)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    names.sort();
    names
}

/// Extended `NBD_CMD_BLOCK_STATUS`: per context id, its `(length, flags)`.
pub fn ext_block_status(
    c: &mut RawNbd,
    cookie: u64,
    offset: u64,
    len: u64,
) -> Vec<(u32, Vec<(u64, u64)>)> {
    c.send_ext_request(0, CMD_BLOCK_STATUS, cookie, offset, len);
    let mut out = Vec::new();
    loop {
        let ch = c.read_ext_chunk();
        assert_eq!(ch.cookie, cookie);
        assert_eq!(ch.rtype, REPLY_TYPE_BLOCK_STATUS_EXT, "{ch:?}");
        let p = &ch.payload;
        let be32 = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let be64 = |i: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&p[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let (id, n) = (be32(0), be32(4) as usize);
        assert_eq!(p.len(), 8 + 16 * n, "descriptor count matches the payload");
        out.push((
            id,
            (0..n)
                .map(|i| (be64(8 + 16 * i), be64(16 + 16 * i)))
                .collect(),
        ));
        if ch.flags & REPLY_FLAG_DONE != 0 {
            return out;
        }
    }
}

/// Runs `scenario` on the binary under test, and on QSD too unless the
/// binary is QSD or QSD is missing, and asserts both transcripts are equal.
/// The scenario asserts the expected results itself.
pub fn on_both(size: u64, scenario: impl Fn(&mut BitmapDaemon) -> Value) {
    let ours = scenario(&mut BitmapDaemon::start(&binary(), size));
    if is_qsd() || !Path::new(QSD_BIN).exists() {
        eprintln!("NOTE: not compared with QSD (binary is QSD or QSD missing)");
        return;
    }
    let qsd = scenario(&mut BitmapDaemon::start(Path::new(QSD_BIN), size));
    assert_eq!(
        ours, qsd,
        "transcript differs from QSD's\nours: {ours:#}\nqsd:  {qsd:#}"
    );
}
