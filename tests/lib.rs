//! Shared helpers for the end-to-end tests.
//!
//! The tests start the binary named by `RINGSTOR_BIN` (default: the
//! workspace's `target/release/ringstor`, else `target/debug/ringstor`) and
//! drive it through its command line, its QMP monitor and real NBD clients
//! (nbdinfo, nbdcopy, nbdsh/python3-libnbd, qemu-img, qemu-io, fio).
//! With `RINGSTOR_BIN=/usr/bin/qemu-storage-daemon` the same suite checks
//! QSD itself, which is how the suite is validated; ringstor-only tests then
//! skip themselves (see [`daemon::skip_on_qsd`]).

#[path = "support/bitmaps.rs"]
pub mod bitmaps;
#[path = "support/ceph.rs"]
pub mod ceph;
#[path = "support/daemon.rs"]
pub mod daemon;
#[path = "support/inherit.rs"]
pub mod inherit;
#[path = "support/nbdraw.rs"]
pub mod nbdraw;
#[path = "support/pki.rs"]
pub mod pki;
#[path = "support/qmp.rs"]
pub mod qmp;
#[path = "support/util.rs"]
pub mod util;
#[path = "support/vm.rs"]
pub mod vm;

pub use daemon::{binary, is_qsd, scratch, skip_on_qsd, skip_unless_comparing, Daemon};
pub use qmp::{Qmp, QmpError};
pub use util::*;
