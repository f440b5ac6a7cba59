//! Drives the sans-I/O [`Negotiator`] over a socket on an iothread, in
//! plaintext and, after `NBD_OPT_STARTTLS`, through TLS.

use std::sync::Arc;

use engine::buf::Buf;
use engine::op::{GatherList, SharedFd};

use super::proto::{Negotiated, Negotiator, NegotiatorConfig, Outcome};
use super::registry::Registry;
use super::tls::{self, TlsEnd, TlsSession};
use super::transport::Transport;

/// Receive buffer of the handshake (options are small; the negotiator
/// streams past larger ones without buffering them).
const HANDSHAKE_RECV: usize = 16 * 1024;

/// How a handshake ended without a transmission phase.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeEnd {
    #[error("client closed the connection")]
    Closed,
    #[error("client aborted the handshake")]
    Aborted,
    #[error("handshake failed: {0}")]
    Failed(String),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsEnd),
}

/// What a successful handshake hands to the transmission phase.
pub(crate) struct Handshake {
    pub(crate) negotiated: Negotiated,
    /// Bytes the client sent after the handshake (pipelined requests),
    /// already decrypted.
    pub(crate) leftover: Vec<u8>,
    /// The TLS session, when the client upgraded.
    pub(crate) tls: Option<TlsSession>,
}

async fn flush(
    fd: &SharedFd,
    io: &Transport,
    neg: &mut Negotiator,
    out: &mut Option<GatherList>,
) -> Result<(), HandshakeEnd> {
    let pending = neg.output().len();
    if pending == 0 {
        return Ok(());
    }
    let mut list = out.take().unwrap_or_default();
    list.clear();
    list.push_bytes(neg.output());
    let (r, list) = io.send_all(fd, list, false).await;
    *out = Some(list);
    r?;
    neg.advance_output(pending);
    Ok(())
}

/// Runs the handshake; TLS is required when `tls` is given.
pub(crate) async fn negotiate(
    fd: &SharedFd,
    registry: &Registry,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Handshake, HandshakeEnd> {
    let mut neg = Negotiator::new(NegotiatorConfig {
        tls: tls.is_some(),
        ..NegotiatorConfig::default()
    });
    let mut io = Transport::Plain;
    let mut rbuf = Buf::with_capacity(HANDSHAKE_RECV);
    let mut out = None;
    loop {
        flush(fd, &io, &mut neg, &mut out).await?;
        let (r, b) = io.recv_into(fd, rbuf, HANDSHAKE_RECV).await;
        rbuf = b;
        if r? == 0 {
            return Err(HandshakeEnd::Closed);
        }
        let (used, outcome) = neg.feed(rbuf.as_slice(), registry);
        rbuf.consume_front(used);
        match outcome {
            None => {}
            Some(Outcome::StartTls) => {
                // The ACK goes out in plaintext; what follows is TLS.
                flush(fd, &io, &mut neg, &mut out).await?;
                let Some(config) = tls else {
                    return Err(HandshakeEnd::Failed("STARTTLS without TLS".into()));
                };
                let conn = tls::accept(fd, config.clone(), rbuf.as_slice()).await?;
                log::debug!("nbd: TLS session up: {}", conn.describe());
                rbuf.set_len(0);
                io = Transport::Tls(Box::new(conn));
                // Options the client sent along with its last handshake
                // record are in the session already: the next receive
                // returns them first.
                neg.tls_started();
            }
            Some(Outcome::Negotiated(n)) => {
                flush(fd, &io, &mut neg, &mut out).await?;
                return Ok(Handshake {
                    negotiated: *n,
                    leftover: rbuf.as_slice().to_vec(),
                    tls: io.into_session(),
                });
            }
            Some(Outcome::Aborted) => {
                let _ = flush(fd, &io, &mut neg, &mut out).await;
                io.close(fd).await;
                return Err(HandshakeEnd::Aborted);
            }
            Some(Outcome::Failed(e)) => {
                let _ = flush(fd, &io, &mut neg, &mut out).await;
                return Err(HandshakeEnd::Failed(e.to_string()));
            }
        }
    }
}
