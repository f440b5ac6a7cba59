//! ringstor control plane.
pub mod qmp;
