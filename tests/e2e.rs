//! End-to-end tests: one binary, one module per topic.

#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/nbd.rs"]
mod nbd;
#[path = "e2e/nbd_client.rs"]
mod nbd_client;
#[path = "e2e/nbd_qmp.rs"]
mod nbd_qmp;
#[path = "e2e/qmp.rs"]
mod qmp;
#[path = "e2e/rbd.rs"]
mod rbd;
#[path = "e2e/reliability.rs"]
mod reliability;
