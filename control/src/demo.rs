//! `ringstor --demo`: a ready-to-poke daemon in a temporary directory.
//!
//! It creates a 1 GiB sparse image, an iothread, a `file` node, an NBD
//! server on a Unix socket with a writable export named `demo`, and a QMP
//! monitor socket, prints how to connect, and serves until Ctrl-C; the
//! directory is removed at exit.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::qmp::MonitorAddr;

/// Demo image size.
const IMAGE_SIZE: u64 = 1 << 30;

/// Runs the demo until a quit signal or `quit`.
pub fn run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ringstor-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ControlError::failed(format!("cannot create {}: {e}", dir.display())))?;
    let r = serve(&dir);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        log::warn!("cannot remove {}: {e}", dir.display());
    }
    r
}

fn serve(dir: &Path) -> Result<()> {
    let image = dir.join("demo.img");
    let nbd_sock = dir.join("nbd.sock");
    let qmp_sock = dir.join("qmp.sock");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(IMAGE_SIZE))
        .map_err(|e| ControlError::failed(format!("cannot create {}: {e}", image.display())))?;

    let mut d = Daemon::new()?;
    crate::signals::spawn_waiter(d.internal_sender())
        .map_err(|e| ControlError::failed(format!("cannot start the signal thread: {e}")))?;
    let steps = [
        (
            "object-add",
            json!({"qom-type": "iothread", "id": "demo-io"}),
        ),
        (
            "blockdev-add",
            json!({"driver": "file", "node-name": "demo-file", "filename": path(&image)}),
        ),
        (
            "nbd-server-start",
            json!({"addr": {"type": "unix", "data": {"path": path(&nbd_sock)}}}),
        ),
        (
            "block-export-add",
            json!({"type": "nbd", "id": "demo", "name": "demo", "node-name": "demo-file",
                   "writable": true, "iothread": "demo-io"}),
        ),
    ];
    for (cmd, args) in steps {
        let args: Map<String, Value> = match args {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if let Err(e) = d.execute(cmd, args) {
            d.shutdown();
            return Err(ControlError::failed(format!("{cmd}: {}", e.desc)));
        }
    }
    if let Err(e) = d.add_monitor(MonitorAddr::Unix(qmp_sock.clone()), false) {
        d.shutdown();
        return Err(e);
    }
    println!(
        "ringstor demo: 1 GiB image {img}, exported writable as NBD export 'demo'.\n\
         \n  nbdinfo 'nbd+unix:///demo?socket={nbd}'\n  \
         qemu-img info 'nbd+unix:///demo?socket={nbd}'\n  \
         qemu-io -f raw -c 'write -P 0xab 0 1M' 'nbd+unix:///demo?socket={nbd}'\n  \
         QMP monitor: {qmp}  (e.g. python3 -m qemu.qmp.qmp_shell {qmp})\n\
         \nPress Ctrl-C to stop; {dir} is removed at exit.",
        img = image.display(),
        nbd = nbd_sock.display(),
        qmp = qmp_sock.display(),
        dir = dir.display(),
    );
    d.run();
    Ok(())
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
