//! A Linux guest under `qemu-system-x86_64` (TCG) as the vhost-user-blk
//! frontend: the real peer a VM host runs. The guest is Debian's kernel
//! with its virtio modules and a static busybox, fetched by
//! `tests/vm/prepare`; the test supplies a shell script that the guest's
//! `/init` runs once `/dev/vda` exists. The script reports with lines of
//! the form `RS: key value` on the serial console, which the test reads
//! back through [`Vm::report`]; the guest powers off when the script ends.

use crate::util::die_with_parent;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a guest may take from start to power-off (a TCG boot is ~10 s
/// on an idle 2-core machine; the suite runs tests side by side).
pub const VM_TIMEOUT: Duration = Duration::from_secs(240);

/// The QEMU binary the VM tests boot.
pub const QEMU: &str = "qemu-system-x86_64";

/// Where the guest's kernel, modules and busybox are: `RINGSTOR_VM_GUEST`
/// (set by `tests/run`, which then requires them) or `target/vm-guest`.
/// `None`, with a SKIP note, when neither holds a guest and the variable
/// is unset: a plain `cargo test` on a machine without QEMU skips; the
/// suite's own command never does.
pub fn guest_dir() -> Option<PathBuf> {
    let required = std::env::var_os("RINGSTOR_VM_GUEST").map(PathBuf::from);
    let dir = required
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm-guest"));
    let complete = dir.join("vmlinuz").is_file()
        && dir.join("busybox").is_file()
        && dir.join("modules/order").is_file();
    let qemu = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (complete && qemu, required) {
        (true, _) => Some(dir),
        (false, Some(d)) => panic!(
            "RINGSTOR_VM_GUEST={} but the guest is incomplete or {QEMU} is missing; \
             tests/run installs qemu-system-x86 and runs tests/vm/prepare",
            d.display()
        ),
        (false, None) => {
            eprintln!("SKIP: no VM guest or {QEMU} (tests/run installs them)");
            None
        }
    }
}

/// One `newc` cpio member.
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    CharDev(&'a str, u32, u32),
}

fn cpio_header(out: &mut Vec<u8>, ino: u32, mode: u32, len: usize, rdev: (u32, u32), name: &str) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        len as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An uncompressed `newc` archive, the format the kernel unpacks as an
/// initramfs (the host has no `cpio`, and busybox's would need a staging
/// tree; the format is a header of hex fields per member).
fn cpio(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            Entry::Dir(name) => cpio_header(&mut out, ino, 0o040755, 0, (0, 0), name),
            Entry::CharDev(name, major, minor) => {
                cpio_header(&mut out, ino, 0o020600, 0, (*major, *minor), name)
            }
            Entry::File(name, perm, data) => {
                cpio_header(&mut out, ino, 0o100000 | perm, data.len(), (0, 0), name);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    cpio_header(&mut out, 0, 0, 0, (0, 0), "TRAILER!!!");
    out
}

/// The guest's `/init`: mount, load the virtio modules in order, wait for
/// the disk, run the test's script, power off (whatever the script did).
fn init_script(modules: &[String], body: &str) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /m/{m}.ko\n"));
    }
    s.push_str(
        "n=0\n\
         while [ ! -b /dev/vda ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done\n\
         echo \"RS: disk $([ -b /dev/vda ] && echo yes || echo no)\"\n",
    );
    s.push_str(body);
    s.push_str("\necho 'RS: end'\nsync\npoweroff -f\n");
    s
}

/// Packs the initramfs for `body` into `dir/initrd.img`.
fn initramfs(guest: &Path, dir: &Path, body: &str) -> PathBuf {
    let order = fs::read_to_string(guest.join("modules/order")).expect("modules/order");
    let modules: Vec<String> = order.split_whitespace().map(str::to_owned).collect();
    let init = init_script(&modules, body).into_bytes();
    let busybox = fs::read(guest.join("busybox")).expect("guest busybox");
    let kos: Vec<(String, Vec<u8>)> = modules
        .iter()
        .map(|m| {
            let ko = fs::read(guest.join(format!("modules/{m}.ko"))).expect("guest module");
            (format!("m/{m}.ko"), ko)
        })
        .collect();
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        // The kernel opens it for init's stdio before init can mount /dev.
        Entry::CharDev("dev/console", 5, 1),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::Dir("m"),
        Entry::File("init", 0o755, &init),
        Entry::File("bin/busybox", 0o755, &busybox),
    ];
    for (name, ko) in &kos {
        entries.push(Entry::File(name, 0o644, ko));
    }
    let path = dir.join("initrd.img");
    let mut f = fs::File::create(&path).expect("create initrd");
    f.write_all(&cpio(&entries)).expect("write initrd");
    path
}

/// A running guest whose disk is the vhost-user-blk export at a socket.
pub struct Vm {
    child: Child,
    serial: PathBuf,
}

/// What the guest was given: its vCPUs and `-device` / `-chardev` extras.
pub struct VmConfig<'a> {
    /// `-smp`.
    pub cpus: u32,
    /// Extra `vhost-user-blk-pci` properties (`,num-queues=1`, ...).
    pub device: &'a str,
    /// Extra chardev properties (`,reconnect-ms=500`, ...).
    pub chardev: &'a str,
}

impl Default for VmConfig<'_> {
    fn default() -> Self {
        VmConfig {
            cpus: 2,
            device: "",
            chardev: "",
        }
    }
}

impl Vm {
    /// Boots a guest on `sock` running `body` after the disk appears;
    /// `dir` holds its initramfs and serial log.
    pub fn start(guest: &Path, dir: &Path, sock: &Path, cfg: &VmConfig<'_>, body: &str) -> Vm {
        let initrd = initramfs(guest, dir, body);
        let serial = dir.join("serial.log");
        let mut cmd = Command::new(QEMU);
        cmd.args(["-M", "q35", "-accel", "tcg", "-m", "256"])
            .args(["-smp", &cfg.cpus.to_string()])
            // vhost-user needs guest RAM in a shareable fd.
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=vu,path={}{}",
                sock.display(),
                cfg.chardev
            ))
            .arg("-device")
            .arg(format!("vhost-user-blk-pci,chardev=vu{}", cfg.device))
            .arg("-kernel")
            .arg(guest.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(["-display", "none", "-nodefaults", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("qemu.err")).expect("qemu stderr"));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn qemu-system-x86_64");
        Vm { child, serial }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn qemu_stderr(&self) -> String {
        let p = self.serial.with_file_name("qemu.err");
        fs::read_to_string(p).unwrap_or_default()
    }

    /// Waits until the console shows `RS: {key}` (a step the script reached).
    pub fn wait_for(&mut self, key: &str) {
        let want = format!("RS: {key}");
        let deadline = Instant::now() + VM_TIMEOUT;
        while !self.console().contains(&want) {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "guest exited ({s}) before `{want}`; console:\n{}\nqemu:\n{}",
                    self.console(),
                    self.qemu_stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "guest never reached `{want}`; console:\n{}",
                self.console()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits for power-off and returns the script's `RS:` lines by key
    /// (the guest must have run to the end).
    pub fn report(mut self) -> BTreeMap<String, String> {
        let status = self.wait_exit();
        let console = self.console();
        assert!(
            status.success(),
            "qemu exited with {status}; console:\n{console}\nqemu:\n{}",
            self.qemu_stderr()
        );
        let map = parse_report(&console);
        assert!(
            map.contains_key("end"),
            "the guest's script did not finish; console:\n{console}"
        );
        map
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + VM_TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for qemu") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "guest did not power off in {VM_TIMEOUT:?}; console:\n{}",
                    self.console()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `RS: key value...` lines by key (the last one wins).
fn parse_report(console: &str) -> BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once("RS: "))
        .map(|(_, rest)| match rest.split_once(' ') {
            Some((k, v)) => (k.to_owned(), v.trim().to_owned()),
            None => (rest.trim().to_owned(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_members_are_aligned_and_end_with_the_trailer() {
        let a = cpio(&[Entry::Dir("d"), Entry::File("d/f", 0o644, b"abc")]);
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("d/f\0"));
        assert!(text.contains("abc"));
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn report_lines_are_read_by_key() {
        let m = parse_report("boot\r\nRS: size 8192\r\nnoise RS: ro 0\nRS: end\n");
        assert_eq!(m["size"], "8192");
        assert_eq!(m["ro"], "0");
        assert!(m.contains_key("end"));
    }
}
