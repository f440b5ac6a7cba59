//! ringstor export drivers.
