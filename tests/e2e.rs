//! End-to-end tests: one binary, one module per topic (but `placement.rs`,
//! which needs the machine to itself, in a binary of its own).

#[path = "e2e/bitmap_backup.rs"]
mod bitmap_backup;
#[path = "e2e/bitmaps.rs"]
mod bitmaps;
#[path = "e2e/blkio_client.rs"]
mod blkio_client;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/discard_bitmaps.rs"]
mod discard_bitmaps;
#[path = "e2e/fuse.rs"]
mod fuse;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/inherited.rs"]
mod inherited;
#[path = "e2e/nbd.rs"]
mod nbd;
#[path = "e2e/nbd_client.rs"]
mod nbd_client;
#[path = "e2e/nbd_client_tls.rs"]
mod nbd_client_tls;
#[path = "e2e/nbd_qmp.rs"]
mod nbd_qmp;
#[path = "e2e/parity.rs"]
mod parity;
#[path = "e2e/qcow2.rs"]
mod qcow2;
#[path = "e2e/qcow2_bitmaps.rs"]
mod qcow2_bitmaps;
#[path = "e2e/qcow2_crash.rs"]
mod qcow2_crash;
#[path = "e2e/qmp.rs"]
mod qmp;
#[path = "e2e/rbd.rs"]
mod rbd;
#[path = "e2e/reliability.rs"]
mod reliability;
#[path = "e2e/stats.rs"]
mod stats;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/vduse_blk.rs"]
mod vduse_blk;
#[path = "e2e/vhost_user_blk.rs"]
mod vhost_user_blk;
#[path = "e2e/vhost_user_blk_hostile.rs"]
mod vhost_user_blk_hostile;
#[path = "e2e/vhost_user_blk_nodes.rs"]
mod vhost_user_blk_nodes;
#[path = "e2e/vhost_user_blk_qmp.rs"]
mod vhost_user_blk_qmp;
#[path = "e2e/vhost_user_blk_remote.rs"]
mod vhost_user_blk_remote;
#[path = "e2e/vhost_user_blk_vm.rs"]
mod vhost_user_blk_vm;
#[path = "e2e/vhost_user_blk_writes.rs"]
mod vhost_user_blk_writes;
