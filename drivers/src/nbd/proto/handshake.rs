//! Sans-I/O server side of the fixed-newstyle NBD handshake.
//!
//! [`Negotiator::new`] queues the 18-byte greeting. The caller then loops:
//! write [`Negotiator::output`] to the socket (acknowledging with
//! [`Negotiator::advance_output`]) and hand received bytes to
//! [`Negotiator::feed`], which accepts input split at any byte boundary
//! and returns how many bytes it consumed plus, once, the final
//! [`Outcome`]. Bytes after the final option belong to the transmission
//! phase and are left unconsumed.
//!
//! Memory is bounded whatever the peer claims: option headers are read
//! into a fixed array; a payload is buffered only when the option needs
//! it and its length is at most `max_option_buffer` (default 64 KiB).
//! Longer payloads of options we understand are discarded as they arrive
//! and answered with `NBD_REP_ERR_TOO_BIG`; payloads we do not need
//! (unknown options, options that take no data) are discarded and
//! answered with `NBD_REP_ERR_UNSUP` / `NBD_REP_ERR_INVALID`. Like QEMU,
//! an option length above [`NBD_MAX_PAYLOAD`] (32 MiB) drops the client,
//! as does an `NBD_OPT_EXPORT_NAME` longer than [`NBD_MAX_STRING_SIZE`] or
//! `max_option_buffer` (it has no error reply).
//! Unlike QEMU we also cap the number of options per connection
//! (`max_options`, default 4096: enough for `nbdinfo --list` over
//! hundreds of exports) so a client cannot keep a handshake alive forever.
//!
//! Client flags follow QEMU: unknown flags drop the connection; a client
//! without `FIXED_NEWSTYLE` may only send `NBD_OPT_EXPORT_NAME`, anything
//! else drops it.
//!
//! # TLS
//!
//! With [`NegotiatorConfig::tls`] the server requires TLS, with QEMU's rules
//! before the upgrade (`starttls.rs`). `NBD_OPT_STARTTLS` is acknowledged
//! and [`Outcome::StartTls`] returned: the caller flushes the ACK, runs the
//! TLS handshake over the socket (bytes left unconsumed after the option
//! are already TLS records), calls [`Negotiator::tls_started`], and then
//! feeds decrypted bytes as before. Output queued afterwards goes through
//! TLS too.
#![forbid(unsafe_code)]

use thiserror::Error;

use super::consts::*;
use super::export::{ExportCatalog, ExportInfo, MetaContext};
use super::wire::{put_u16, put_u32, put_u64};

/// Limits for one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatorConfig {
    /// Options accepted before the client is dropped.
    pub max_options: u32,
    /// Largest option payload buffered for parsing; larger payloads of
    /// INFO/GO/meta-context options are skipped and refused as TOO_BIG.
    pub max_option_buffer: u32,
    /// TLS is required: only `NBD_OPT_STARTTLS` is served before it.
    pub tls: bool,
}

impl Default for NegotiatorConfig {
    fn default() -> Self {
        NegotiatorConfig {
            max_options: 4096,
            max_option_buffer: 64 * 1024,
            tls: false,
        }
    }
}

/// Successful end of the handshake: the transmission phase starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Name the client asked for (may differ from `info.name`).
    pub export_name: String,
    /// The export, with `transmission_flags` as advertised to the client
    /// and block sizes as advertised (sanitised).
    pub info: ExportInfo,
    /// Structured replies negotiated (also true when `extended`).
    pub structured: bool,
    /// Extended headers negotiated.
    pub extended: bool,
    /// Selected metadata contexts (empty unless the last
    /// `NBD_OPT_SET_META_CONTEXT` named this export).
    pub meta_contexts: Vec<(u32, MetaContext)>,
    /// Client set `NBD_FLAG_C_NO_ZEROES`.
    pub no_zeroes: bool,
    /// Client asked for `NBD_INFO_BLOCK_SIZE` in `NBD_OPT_GO` and so
    /// promised to honour the block-size constraints. When false (GO
    /// without the request, or EXPORT_NAME) the transmission layer should
    /// tolerate unaligned requests, as QEMU does.
    pub block_size_acked: bool,
}

/// Why the handshake dropped the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("unknown client flags {0:#x}")]
    BadClientFlags(u32),
    #[error("bad option magic {0:#x}")]
    BadOptionMagic(u64),
    #[error("option {option} length {len} exceeds the {NBD_MAX_PAYLOAD} byte limit")]
    OptionTooLong { option: u32, len: u32 },
    #[error("more than {0} options")]
    TooManyOptions(u32),
    #[error("option {0} not allowed without fixed newstyle")]
    NotFixedNewstyle(u32),
    #[error("NBD_OPT_EXPORT_NAME length {0} too long")]
    ExportNameTooLong(u32),
    #[error("NBD_OPT_EXPORT_NAME with a name that is not UTF-8")]
    ExportNameNotUtf8,
    #[error("NBD_OPT_EXPORT_NAME for unknown export {0:?}")]
    UnknownExport(String),
    #[error("NBD_OPT_EXPORT_NAME after extended headers were negotiated")]
    ExportNameWithExtendedHeaders,
    #[error("Option {0:#x} not permitted before TLS")]
    TlsRequired(u32),
    #[error("NBD_OPT_STARTTLS with a payload")]
    StartTlsPayload,
}

/// Final result of a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enter the transmission phase (after flushing [`Negotiator::output`]).
    Negotiated(Box<Negotiated>),
    /// The client sent `NBD_OPT_ABORT`; flush the ACK (best effort), close.
    Aborted,
    /// The client asked for TLS and got its ACK: flush it, run the TLS
    /// handshake, then [`Negotiator::tls_started`]. Only with
    /// [`NegotiatorConfig::tls`].
    StartTls,
    /// Protocol violation or unservable request: close the connection.
    Failed(HandshakeError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    ClientFlags,
    OptHeader,
    /// Buffering `len` payload bytes of `option` into `payload`.
    OptPayload {
        option: u32,
        len: u32,
    },
    /// Skipping `remaining` bytes, then replying `reply` to `option`
    /// (and, with `fatal`, dropping the client).
    Discard {
        option: u32,
        remaining: u32,
        reply: u32,
        msg: &'static str,
        fatal: Option<HandshakeError>,
    },
    /// `NBD_OPT_STARTTLS` was acknowledged; waiting for the TLS handshake.
    StartTls,
    Finished,
}

/// Server handshake state machine; see the module docs.
#[derive(Debug)]
pub struct Negotiator {
    pub(super) config: NegotiatorConfig,
    pub(super) state: State,
    hdr: [u8; OPTION_HEADER_LEN],
    hdr_fill: usize,
    pub(super) payload: Vec<u8>,
    out: Vec<u8>,
    pub(super) fixed: bool,
    pub(super) no_zeroes: bool,
    pub(super) structured: bool,
    pub(super) extended: bool,
    /// TLS is required and not started yet.
    pub(super) before_tls: bool,
    options_seen: u32,
    /// Canonical export name and contexts of the last successful SET.
    pub(super) meta: Option<(String, Vec<(u32, MetaContext)>)>,
    outcome: Option<Outcome>,
}

impl Negotiator {
    /// New handshake; the greeting is queued in [`Self::output`].
    pub fn new(config: NegotiatorConfig) -> Self {
        let mut out = Vec::with_capacity(GREETING_LEN);
        put_u64(&mut out, NBD_INIT_MAGIC);
        put_u64(&mut out, NBD_OPTS_MAGIC);
        put_u16(&mut out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
        Negotiator {
            config,
            state: State::ClientFlags,
            hdr: [0; OPTION_HEADER_LEN],
            hdr_fill: 0,
            payload: Vec::new(),
            out,
            fixed: false,
            no_zeroes: false,
            structured: false,
            extended: false,
            before_tls: config.tls,
            options_seen: 0,
            meta: None,
            outcome: None,
        }
    }

    /// Bytes waiting to be sent to the client.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Mark the first `n` bytes of [`Self::output`] as sent.
    pub fn advance_output(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
    }

    /// True once an [`Outcome`] has been produced.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Consume client bytes. Returns the number of bytes consumed (less
    /// than `input.len()` only once finished) and the outcome, which is
    /// returned exactly once.
    pub fn feed(&mut self, input: &[u8], catalog: &dyn ExportCatalog) -> (usize, Option<Outcome>) {
        let mut pos = 0;
        while !matches!(self.state, State::Finished | State::StartTls) {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.state.clone() {
                State::ClientFlags | State::OptHeader => {
                    let want = if self.state == State::ClientFlags {
                        4
                    } else {
                        OPTION_HEADER_LEN
                    };
                    let take = (want - self.hdr_fill).min(rest.len());
                    if let (Some(dst), Some(src)) = (
                        self.hdr.get_mut(self.hdr_fill..self.hdr_fill + take),
                        rest.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    self.hdr_fill += take;
                    pos += take;
                    if self.hdr_fill < want {
                        break;
                    }
                    self.hdr_fill = 0;
                    if self.state == State::ClientFlags {
                        self.on_client_flags();
                    } else {
                        self.on_option_header(catalog);
                    }
                }
                State::OptPayload { option, len } => {
                    let missing = (len as usize).saturating_sub(self.payload.len());
                    let take = missing.min(rest.len());
                    self.payload
                        .extend_from_slice(rest.get(..take).unwrap_or(&[]));
                    pos += take;
                    if take < missing {
                        break;
                    }
                    let payload = std::mem::take(&mut self.payload);
                    self.state = State::OptHeader;
                    self.on_option(option, &payload, catalog);
                }
                State::Discard {
                    option,
                    remaining,
                    reply,
                    msg,
                    fatal,
                } => {
                    let take = (remaining as usize).min(rest.len());
                    pos += take;
                    let remaining = remaining - len32_sat(take);
                    if remaining > 0 {
                        self.state = State::Discard {
                            option,
                            remaining,
                            reply,
                            msg,
                            fatal,
                        };
                        break;
                    }
                    self.state = State::OptHeader;
                    self.rep_err(option, reply, msg);
                    if let Some(e) = fatal {
                        self.finish(Outcome::Failed(e));
                    }
                }
                State::Finished | State::StartTls => break,
            }
        }
        (pos, self.outcome.take())
    }

    pub(super) fn finish(&mut self, outcome: Outcome) {
        self.state = State::Finished;
        self.outcome = Some(outcome);
    }

    /// Returns `outcome` from this `feed` without finishing the handshake.
    pub(super) fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    fn on_client_flags(&mut self) {
        let flags = u32::from_be_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]]);
        self.fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE != 0;
        self.no_zeroes = flags & NBD_FLAG_C_NO_ZEROES != 0;
        let unknown = flags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        if unknown != 0 {
            self.finish(Outcome::Failed(HandshakeError::BadClientFlags(unknown)));
        } else {
            self.state = State::OptHeader;
        }
    }

    fn on_option_header(&mut self, catalog: &dyn ExportCatalog) {
        let h = self.hdr;
        let magic = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let option = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        self.options_seen = self.options_seen.saturating_add(1);
        let fail = if magic != NBD_OPTS_MAGIC {
            Some(HandshakeError::BadOptionMagic(magic))
        } else if self.options_seen > self.config.max_options {
            Some(HandshakeError::TooManyOptions(self.config.max_options))
        } else if len > NBD_MAX_PAYLOAD {
            Some(HandshakeError::OptionTooLong { option, len })
        } else if !self.fixed && option != NBD_OPT_EXPORT_NAME {
            Some(HandshakeError::NotFixedNewstyle(option))
        } else if option == NBD_OPT_EXPORT_NAME
            && (len as usize > NBD_MAX_STRING_SIZE || len > self.config.max_option_buffer)
        {
            // EXPORT_NAME has no error reply: an over-long one (also one over
            // a small configured buffer) can only drop the client.
            Some(HandshakeError::ExportNameTooLong(len))
        } else {
            None
        };
        if let Some(e) = fail {
            self.finish(Outcome::Failed(e));
            return;
        }
        if self.before_tls {
            return self.option_before_tls(option, len);
        }
        let needs_payload = matches!(
            option,
            NBD_OPT_EXPORT_NAME
                | NBD_OPT_INFO
                | NBD_OPT_GO
                | NBD_OPT_LIST_META_CONTEXT
                | NBD_OPT_SET_META_CONTEXT
        );
        match option {
            NBD_OPT_ABORT => {
                // Reply, and do not wait for (ignored) payload bytes.
                self.rep(option, NBD_REP_ACK, &[]);
                self.finish(Outcome::Aborted);
            }
            NBD_OPT_SET_META_CONTEXT if !self.structured => self.discard(
                option,
                len,
                NBD_REP_ERR_INVALID,
                "request NBD_OPT_SET_META_CONTEXT when structured reply is not negotiated",
            ),
            _ if needs_payload && len > self.config.max_option_buffer => {
                if option == NBD_OPT_SET_META_CONTEXT {
                    // A failed SET still replaces the previous selection.
                    self.meta = None;
                }
                self.discard(option, len, NBD_REP_ERR_TOO_BIG, "option payload too big")
            }
            _ if needs_payload => {
                // Grow as bytes arrive; never trust the claimed length up front.
                self.payload = Vec::with_capacity((len as usize).min(NBD_MAX_STRING_SIZE));
                self.state = State::OptPayload { option, len };
                if len == 0 {
                    self.state = State::OptHeader;
                    self.on_option(option, &[], catalog);
                }
            }
            NBD_OPT_LIST
            | NBD_OPT_STARTTLS
            | NBD_OPT_STRUCTURED_REPLY
            | NBD_OPT_EXTENDED_HEADERS => {
                if len > 0 {
                    self.discard(
                        option,
                        len,
                        NBD_REP_ERR_INVALID,
                        "option has unexpected length",
                    );
                } else {
                    self.on_option(option, &[], catalog);
                }
            }
            _ => self.discard(option, len, NBD_REP_ERR_UNSUP, "unsupported option"),
        }
    }

    pub(super) fn discard(&mut self, option: u32, len: u32, reply: u32, msg: &'static str) {
        self.discard_then(option, len, reply, msg, None)
    }

    /// Skips `len` payload bytes, replies, and with `fatal` drops the client.
    pub(super) fn discard_then(
        &mut self,
        option: u32,
        len: u32,
        reply: u32,
        msg: &'static str,
        fatal: Option<HandshakeError>,
    ) {
        if len == 0 {
            self.state = State::OptHeader;
            self.rep_err(option, reply, msg);
            if let Some(e) = fatal {
                self.finish(Outcome::Failed(e));
            }
        } else {
            self.state = State::Discard {
                option,
                remaining: len,
                reply,
                msg,
                fatal,
            };
        }
    }

    fn on_option(&mut self, option: u32, payload: &[u8], catalog: &dyn ExportCatalog) {
        match option {
            NBD_OPT_EXPORT_NAME => self.handle_export_name(payload, catalog),
            NBD_OPT_INFO | NBD_OPT_GO => self.handle_info(option, payload, catalog),
            NBD_OPT_LIST_META_CONTEXT | NBD_OPT_SET_META_CONTEXT => {
                self.handle_meta(option, payload, catalog)
            }
            NBD_OPT_LIST => self.handle_list(catalog),
            NBD_OPT_STARTTLS if self.config.tls => {
                self.rep_err(option, NBD_REP_ERR_INVALID, "TLS already enabled")
            }
            NBD_OPT_STARTTLS => self.rep_err(option, NBD_REP_ERR_POLICY, "TLS not configured"),
            NBD_OPT_STRUCTURED_REPLY => {
                if self.extended {
                    self.rep_err(
                        option,
                        NBD_REP_ERR_EXT_HEADER_REQD,
                        "extended headers already negotiated",
                    );
                } else if self.structured {
                    self.rep_err(
                        option,
                        NBD_REP_ERR_INVALID,
                        "structured reply already negotiated",
                    );
                } else {
                    self.structured = true;
                    self.rep(option, NBD_REP_ACK, &[]);
                }
            }
            NBD_OPT_EXTENDED_HEADERS => {
                if self.extended {
                    self.rep_err(
                        option,
                        NBD_REP_ERR_INVALID,
                        "extended headers already negotiated",
                    );
                } else {
                    self.extended = true;
                    self.structured = true;
                    self.rep(option, NBD_REP_ACK, &[]);
                }
            }
            _ => self.rep_err(option, NBD_REP_ERR_UNSUP, "unsupported option"),
        }
    }

    /// Queue an option reply with `payload`.
    pub(super) fn rep(&mut self, option: u32, kind: u32, payload: &[u8]) {
        self.rep_header(option, kind, payload.len());
        self.out.extend_from_slice(payload);
    }

    /// Queue an option reply header announcing `len` payload bytes.
    pub(super) fn rep_header(&mut self, option: u32, kind: u32, len: usize) {
        put_u64(&mut self.out, NBD_REP_MAGIC);
        put_u32(&mut self.out, option);
        put_u32(&mut self.out, kind);
        put_u32(&mut self.out, len32_sat(len));
    }

    /// Append raw bytes to the output (payload following `rep_header`).
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queue an error reply with a human-readable message.
    pub(super) fn rep_err(&mut self, option: u32, kind: u32, msg: &str) {
        let msg = super::wire::truncate_utf8(msg, NBD_MAX_STRING_SIZE);
        self.rep(option, kind, msg.as_bytes());
    }
}

fn len32_sat(n: usize) -> u32 {
    super::wire::len32(n)
}
