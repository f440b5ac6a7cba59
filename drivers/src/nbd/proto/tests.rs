//! Unit tests for the NBD protocol codec.
