//! ringstor control plane.
