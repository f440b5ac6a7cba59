//! Drives the sans-I/O [`Negotiator`] over a socket on an iothread.

use engine::buf::Buf;
use engine::op::{self, GatherList, SharedFd};

use super::proto::{Negotiated, Negotiator, NegotiatorConfig, Outcome};
use super::registry::Registry;

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
}

async fn flush(
    fd: &SharedFd,
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
    let (r, list) = op::send_all(fd, list).await;
    *out = Some(list);
    r?;
    neg.advance_output(pending);
    Ok(())
}

/// Runs the handshake; returns the outcome and any bytes the client sent
/// after it (pipelined requests).
pub(crate) async fn negotiate(
    fd: &SharedFd,
    registry: &Registry,
) -> Result<(Negotiated, Vec<u8>), HandshakeEnd> {
    let mut neg = Negotiator::new(NegotiatorConfig::default());
    let mut rbuf = Buf::with_capacity(HANDSHAKE_RECV);
    let mut out = None;
    loop {
        flush(fd, &mut neg, &mut out).await?;
        let (r, b) = op::recv_into(fd, rbuf, HANDSHAKE_RECV).await;
        rbuf = b;
        if r? == 0 {
            return Err(HandshakeEnd::Closed);
        }
        let (used, outcome) = neg.feed(rbuf.as_slice(), registry);
        rbuf.consume_front(used);
        match outcome {
            None => {}
            Some(Outcome::Negotiated(n)) => {
                flush(fd, &mut neg, &mut out).await?;
                return Ok((*n, rbuf.as_slice().to_vec()));
            }
            Some(Outcome::Aborted) => {
                let _ = flush(fd, &mut neg, &mut out).await;
                return Err(HandshakeEnd::Aborted);
            }
            Some(Outcome::Failed(e)) => {
                let _ = flush(fd, &mut neg, &mut out).await;
                return Err(HandshakeEnd::Failed(e.to_string()));
            }
        }
    }
}
