//! qcow2 driver tests.
