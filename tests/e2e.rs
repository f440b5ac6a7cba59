//! End-to-end tests: one binary, one module per topic.

#[path = "e2e/bitmap_backup.rs"]
mod bitmap_backup;
#[path = "e2e/bitmaps.rs"]
mod bitmaps;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/inherited.rs"]
mod inherited;
#[path = "e2e/nbd.rs"]
mod nbd;
#[path = "e2e/nbd_client.rs"]
mod nbd_client;
#[path = "e2e/nbd_qmp.rs"]
mod nbd_qmp;
#[path = "e2e/parity.rs"]
mod parity;
#[path = "e2e/qmp.rs"]
mod qmp;
#[path = "e2e/rbd.rs"]
mod rbd;
#[path = "e2e/reliability.rs"]
mod reliability;
#[path = "e2e/stats.rs"]
mod stats;
