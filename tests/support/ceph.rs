//! A throw-away single-node Ceph cluster for the rbd tests: one
//! `ceph-mon`, one `ceph-osd` on the in-memory `memstore` objectstore, a
//! pool `rbd` of size 1, cephx with a user `client.ringstor` limited to
//! `profile rbd`. Everything (config, keyrings, mon store, logs, sockets)
//! lives in the cluster's own temporary directory.
//!
//! Tests share one cluster while any of them holds it ([`Ceph::shared`]);
//! the last one to let go stops exactly the two daemons it started (they
//! also get SIGKILL if the test process dies: `PR_SET_PDEATHSIG`, armed
//! from a spawner thread that lives as long as the process, since the
//! signal follows the *thread* that forked: a daemon forked by a test's
//! thread would die with that test while others still use the cluster).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::daemon::scratch;
use crate::util::{die_with_parent, run, Ran};

/// How long a ceph command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The user the daemon under test authenticates as.
pub const CEPH_USER: &str = "ringstor";
/// The pool images are made in.
pub const CEPH_POOL: &str = "rbd";

/// A running cluster. See the module docs.
pub struct Ceph {
    dir: tempfile::TempDir,
    mon: Child,
    osd: Child,
    /// `ceph.conf` (points at the admin keyring for the CLI tools).
    pub conf: PathBuf,
    /// `client.ringstor`'s key, base64 as Ceph prints it.
    pub key: String,
    /// A file holding just that key (no newline): `secret,file=..,format=base64`.
    pub key_file: PathBuf,
}

static SHARED: Mutex<Weak<Ceph>> = Mutex::new(Weak::new());

/// Whether the Ceph daemons are installed (tests/run installs them).
pub fn ceph_installed() -> bool {
    ["/usr/bin/ceph-mon", "/usr/bin/ceph-osd", "/usr/bin/rbd"]
        .iter()
        .all(|p| Path::new(p).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("uuid")
        .trim()
        .to_string()
}

fn daemon(prog: &str, args: &[&str], log: &Path) -> Child {
    let out = fs::File::create(log).expect("daemon log");
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log fd"))
        .stderr(out);
    die_with_parent(&mut cmd);
    spawn_from_lasting_thread(cmd)
        .unwrap_or_else(|e| panic!("spawn {prog}: {e}; run tests/run, which installs Ceph"))
}

/// A command and where to send the spawned child.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that never exits, so that the child's
/// `PR_SET_PDEATHSIG` fires only when the whole test process goes (see the
/// module docs). `Child` may be waited on and killed from any thread.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let jobs = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("ceph-spawner".into())
            .spawn(move || {
                // The sender lives in a static: this loop (and so the
                // thread) runs as long as the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the ceph spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    jobs.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the ceph spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the ceph spawner thread is gone"))?
}

impl Ceph {
    /// The cluster the running tests share, started if none is up.
    pub fn shared() -> Arc<Ceph> {
        let mut g = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.upgrade() {
            return c;
        }
        let c = Arc::new(Ceph::start());
        *g = Arc::downgrade(&c);
        c
    }

    fn start() -> Ceph {
        let t0 = Instant::now();
        let dir = scratch();
        let d = dir.path().to_path_buf();
        for sub in ["mon", "osd", "run", "log"] {
            fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let fsid = uuid();
        let port = free_port();
        let conf = d.join("ceph.conf");
        let ds = d.display();
        fs::write(
            &conf,
            format!(
                "[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
paxos propose interval = 0.01
run dir = {ds}/run
admin socket = {ds}/run/$name.asok
log file = {ds}/log/$name.log
pid file = {ds}/run/$name.pid
keyring = {ds}/$name.keyring
mon data = {ds}/mon
osd data = {ds}/osd
osd objectstore = memstore
memstore device bytes = 1073741824
ms bind ipv6 = false
[client.admin]
keyring = {ds}/admin.keyring
"
            ),
        )
        .expect("write ceph.conf");
        let c = conf.to_str().expect("utf-8 path");
        let p = |name: &str| d.join(name).to_string_lossy().into_owned();
        let tool = |prog: &str, args: &[&str]| {
            run(prog, args, CMD_TIMEOUT).success(&format!("{prog} {args:?}"))
        };
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &p("mon.a.keyring"),
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        );
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &p("admin.keyring"),
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ],
        );
        tool(
            "ceph-authtool",
            &[&p("mon.a.keyring"), "--import-keyring", &p("admin.keyring")],
        );
        tool(
            "monmaptool",
            &[
                "--create",
                "--addv",
                "a",
                &format!("[v2:127.0.0.1:{port}]"),
                "--fsid",
                &fsid,
                &p("monmap"),
            ],
        );
        tool(
            "ceph-mon",
            &[
                "-c",
                c,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &p("monmap"),
                "--keyring",
                &p("mon.a.keyring"),
            ],
        );
        let mon = daemon(
            "ceph-mon",
            &["-c", c, "-i", "a", "-f"],
            &d.join("log/mon.out"),
        );
        let mut cluster = Ceph {
            conf: conf.clone(),
            key: String::new(),
            key_file: d.join("ringstor.key"),
            mon,
            // Replaced below; a placeholder child that is already gone.
            osd: Command::new("true").spawn().expect("spawn true"),
            dir,
        };
        let osd_uuid = uuid();
        let id = cluster
            .ceph(&["osd", "new", &osd_uuid])
            .stdout
            .trim()
            .to_string();
        let okr = p(&format!("osd.{id}.keyring"));
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &okr,
                "--gen-key",
                "-n",
                &format!("osd.{id}"),
            ],
        );
        cluster.ceph(&[
            "auth",
            "add",
            &format!("osd.{id}"),
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            &okr,
        ]);
        tool(
            "ceph-osd",
            &["-c", c, "-i", &id, "--mkfs", "--osd-uuid", &osd_uuid],
        );
        let _ = cluster.osd.wait();
        cluster.osd = daemon(
            "ceph-osd",
            &["-c", c, "-i", &id, "-f"],
            &d.join("log/osd.out"),
        );
        let deadline = Instant::now() + CMD_TIMEOUT;
        while !cluster.ceph(&["osd", "stat"]).stdout.contains("1 up") {
            assert!(Instant::now() < deadline, "the OSD did not come up");
            sleep(Duration::from_millis(100));
        }
        cluster.ceph(&["osd", "pool", "create", CEPH_POOL, "8"]);
        cluster.ceph(&[
            "osd",
            "pool",
            "set",
            CEPH_POOL,
            "size",
            "1",
            "--yes-i-really-mean-it",
        ]);
        cluster.rbd(&["pool", "init", CEPH_POOL]);
        cluster.ceph(&[
            "auth",
            "get-or-create",
            &format!("client.{CEPH_USER}"),
            "mon",
            "profile rbd",
            "osd",
            &format!("profile rbd pool={CEPH_POOL}"),
        ]);
        cluster.key = cluster
            .ceph(&["auth", "get-key", &format!("client.{CEPH_USER}")])
            .stdout
            .trim()
            .to_string();
        fs::write(&cluster.key_file, &cluster.key).expect("key file");
        eprintln!("ceph: cluster up in {:?} ({})", t0.elapsed(), d.display());
        cluster
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ceph ARGS` as client.admin; panics on failure.
    pub fn ceph(&self, args: &[&str]) -> Ran {
        let c = self.conf.to_string_lossy();
        let mut full = vec!["-c", &c, "--connect-timeout", "30"];
        full.extend_from_slice(args);
        run("ceph", &full, CMD_TIMEOUT).success(&format!("ceph {args:?}"))
    }

    /// `rbd ARGS` as client.admin; panics on failure.
    pub fn rbd(&self, args: &[&str]) -> Ran {
        let c = self.conf.to_string_lossy();
        let mut full = vec!["-c", &c];
        full.extend_from_slice(args);
        run("rbd", &full, CMD_TIMEOUT).success(&format!("rbd {args:?}"))
    }

    /// Bytes `rbd du` reports used by `image`.
    pub fn used(&self, image: &str) -> u64 {
        let spec = format!("{CEPH_POOL}/{image}");
        let out = self.rbd(&["du", "--format", "json", &spec]).stdout;
        let v: serde_json::Value = serde_json::from_str(&out).expect("rbd du JSON");
        v["images"][0]["used_size"].as_u64().expect("used_size")
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        for child in [&mut self.osd, &mut self.mon] {
            // Not yet reaped, so the pid is still this child's.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}
