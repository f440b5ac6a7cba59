//! ringstor control plane.

pub mod cli;
