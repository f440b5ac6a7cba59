//! The handshake before TLS on a server that requires it, as QEMU's
//! `nbd_negotiate_options()` does it:
//!
//! - `NBD_OPT_STARTTLS` (no payload) is acknowledged and ends the plaintext
//!   part ([`Outcome::StartTls`]); with a payload it is refused and the
//!   client dropped (a client that cannot start TLS correctly gets no
//!   second try).
//! - `NBD_OPT_EXPORT_NAME` has no error reply, so it drops the client.
//! - `NBD_OPT_ABORT` is answered `NBD_REP_ERR_TLS_REQD` and ends the
//!   handshake.
//! - Every other option is skipped and answered `NBD_REP_ERR_TLS_REQD`;
//!   the client may go on and ask for TLS.
#![forbid(unsafe_code)]

use super::consts::*;
use super::handshake::{HandshakeError, Negotiator, Outcome, State};

const NOT_BEFORE_TLS: &str = "option not permitted before TLS";

impl Negotiator {
    /// An option header received before TLS (lengths already checked).
    pub(super) fn option_before_tls(&mut self, option: u32, len: u32) {
        match option {
            NBD_OPT_STARTTLS if len == 0 => {
                self.rep(option, NBD_REP_ACK, &[]);
                self.state = State::StartTls;
                self.set_outcome(Outcome::StartTls);
            }
            NBD_OPT_STARTTLS => self.discard_then(
                option,
                len,
                NBD_REP_ERR_INVALID,
                "option has unexpected length",
                Some(HandshakeError::StartTlsPayload),
            ),
            NBD_OPT_EXPORT_NAME => {
                self.finish(Outcome::Failed(HandshakeError::TlsRequired(option)))
            }
            NBD_OPT_ABORT => {
                // Like QEMU: refuse, then end (the client is leaving anyway,
                // and never waits for the payload to be read).
                self.rep_err(option, NBD_REP_ERR_TLS_REQD, NOT_BEFORE_TLS);
                self.finish(Outcome::Aborted);
            }
            _ => self.discard(option, len, NBD_REP_ERR_TLS_REQD, NOT_BEFORE_TLS),
        }
    }

    /// The TLS handshake that [`Outcome::StartTls`] asked for is done:
    /// options are served again, as on a plaintext server.
    pub fn tls_started(&mut self) {
        if self.state == State::StartTls {
            self.before_tls = false;
            self.state = State::OptHeader;
        }
    }
}
