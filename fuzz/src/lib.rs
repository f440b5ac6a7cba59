//! Helpers shared by the NBD fuzz targets: a small independent decoder for
//! transmission replies (`decode`) and a model of the handshake byte streams
//! (`handshake`) used as oracles. Kept out of the targets so new targets
//! (QMP, keyval, ...) can reuse them.

pub mod decode;
pub mod handshake;
