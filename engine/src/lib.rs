//! ringstor data plane.
