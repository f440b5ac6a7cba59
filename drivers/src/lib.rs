//! ringstor export drivers.

pub mod nbd;
