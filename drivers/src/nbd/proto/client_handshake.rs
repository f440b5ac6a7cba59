//! The client side of the fixed-newstyle handshake, sans I/O: the
//! greeting, `NBD_OPT_STARTTLS` when TLS is wanted, `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT`
//! (`base:allocation`, `qemu:allocation-depth`) and `NBD_OPT_GO` asking
//! for block sizes, as QEMU's `nbd_receive_negotiate` does.
//!
//! The caller moves bytes: [`ClientHandshake::step`] says what to send or
//! how many bytes to read next, [`ClientHandshake::input`] takes exactly
//! those bytes. The same machine runs over a blocking socket (the first
//! connection, at `blockdev-add`) and over ring operations (reconnects).
//!
//! With TLS ([`ClientHandshake::with_tls`]) `NBD_OPT_STARTTLS` is the
//! first option, as in QEMU; once the server acknowledged it, `step`
//! returns [`Action::StartTls`]: the caller runs the TLS handshake, and
//! every byte after that goes through TLS.
#![forbid(unsafe_code)]

use thiserror::Error;

use super::consts::*;
use super::wire::{put_u16, put_u32, put_u64, Reader};

/// Largest option reply payload accepted (replies we ask for are small).
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What the server told us, for the transmission phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub size: u64,
    pub transmission_flags: u16,
    pub structured: bool,
    /// Context id of `base:allocation`, if the server has it.
    pub base_allocation: Option<u32>,
    /// Context id of `qemu:allocation-depth`, if the server has it.
    pub allocation_depth: Option<u32>,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_block: u32,
}

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientHandshakeError {
    #[error("Server is not an NBD server (bad magic)")]
    BadMagic,
    #[error("Server does not support the fixed newstyle protocol")]
    NotFixedNewstyle,
    #[error("{0}")]
    Refused(String),
    #[error("Malformed option reply from the server ({0})")]
    Malformed(&'static str),
}

/// The next thing to do for the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes, then call `step` again.
    Send(Vec<u8>),
    /// Read exactly this many bytes and pass them to `input`.
    Recv(usize),
    /// Run the TLS handshake now, then call `step` again; from here on
    /// every byte is sent and received through TLS.
    StartTls,
    /// Negotiation is over.
    Done(Result<ServerInfo, ClientHandshakeError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Greeting,
    ReplyHeader(u32),
    ReplyPayload {
        option: u32,
        kind: u32,
        len: u32,
    },
    /// STARTTLS acknowledged: the caller upgrades the connection.
    StartTls,
    Finished,
}

/// The handshake state machine. See the module docs.
#[derive(Debug)]
pub struct ClientHandshake {
    export: String,
    tls: bool,
    /// `x-dirty-bitmap`: the one context asked for, read as `base:allocation`.
    x_dirty_bitmap: Option<String>,
    state: State,
    out: Vec<u8>,
    info: ServerInfo,
    have_export_info: bool,
    result: Option<Result<ServerInfo, ClientHandshakeError>>,
}

fn option(out: &mut Vec<u8>, opt: u32, data: &[u8]) {
    put_u64(out, NBD_OPTS_MAGIC);
    put_u32(out, opt);
    put_u32(out, data.len() as u32);
    out.extend_from_slice(data);
}

fn name_field(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

impl ClientHandshake {
    /// A handshake for `export` (`""` is the server's default export).
    pub fn new(export: &str) -> ClientHandshake {
        ClientHandshake {
            export: export.to_string(),
            tls: false,
            x_dirty_bitmap: None,
            state: State::Start,
            out: Vec::new(),
            info: ServerInfo {
                size: 0,
                transmission_flags: 0,
                structured: false,
                base_allocation: None,
                allocation_depth: None,
                min_block: 1,
                preferred_block: NBD_DEFAULT_PREFERRED_BLOCK,
                max_block: NBD_MAX_PAYLOAD,
            },
            have_export_info: false,
            result: None,
        }
    }

    /// Upgrades the connection to TLS (`NBD_OPT_STARTTLS`) before any
    /// other option.
    pub fn with_tls(mut self) -> ClientHandshake {
        self.tls = true;
        self
    }

    /// QEMU's `x-dirty-bitmap`: ask for the meta context `name` instead
    /// of `base:allocation` and `qemu:allocation-depth`, and report its
    /// extents as if they were `base:allocation`'s (a dirty bitmap's dirty
    /// bit reads as a hole); the handshake fails if the server lacks it.
    pub fn with_x_dirty_bitmap(mut self, name: &str) -> ClientHandshake {
        self.x_dirty_bitmap = Some(name.to_string());
        self
    }

    /// What to do next.
    pub fn step(&mut self) -> Action {
        if !self.out.is_empty() {
            return Action::Send(std::mem::take(&mut self.out));
        }
        if let Some(r) = self.result.take() {
            self.state = State::Finished;
            return Action::Done(r);
        }
        match self.state {
            State::Start => {
                self.state = State::Greeting;
                Action::Recv(GREETING_LEN)
            }
            State::Greeting => Action::Recv(GREETING_LEN),
            State::ReplyHeader(_) => Action::Recv(OPTION_REPLY_HEADER_LEN),
            State::ReplyPayload { len, .. } => Action::Recv(len as usize),
            State::StartTls => {
                self.send_structured_reply();
                Action::StartTls
            }
            State::Finished => Action::Done(Err(ClientHandshakeError::Malformed("finished"))),
        }
    }

    fn fail(&mut self, e: ClientHandshakeError) {
        self.result = Some(Err(e));
    }

    /// Takes the bytes asked for by the last [`Action::Recv`].
    pub fn input(&mut self, bytes: &[u8]) {
        match self.state {
            State::Greeting => self.greeting(bytes),
            State::ReplyHeader(opt) => self.reply_header(opt, bytes),
            State::ReplyPayload { option, kind, .. } => self.reply(option, kind, bytes),
            State::Start | State::StartTls | State::Finished => {}
        }
    }

    fn greeting(&mut self, b: &[u8]) {
        let mut r = Reader::new(b);
        if r.u64() != Some(NBD_INIT_MAGIC) || r.u64() != Some(NBD_OPTS_MAGIC) {
            return self.fail(ClientHandshakeError::BadMagic);
        }
        let flags = r.u16().unwrap_or(0);
        if flags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
            return self.fail(ClientHandshakeError::NotFixedNewstyle);
        }
        let mut cflags = NBD_FLAG_C_FIXED_NEWSTYLE;
        if flags & NBD_FLAG_NO_ZEROES != 0 {
            cflags |= NBD_FLAG_C_NO_ZEROES;
        }
        put_u32(&mut self.out, cflags);
        if self.tls {
            option(&mut self.out, NBD_OPT_STARTTLS, &[]);
            self.state = State::ReplyHeader(NBD_OPT_STARTTLS);
        } else {
            self.send_structured_reply();
        }
    }

    fn send_structured_reply(&mut self) {
        option(&mut self.out, NBD_OPT_STRUCTURED_REPLY, &[]);
        self.state = State::ReplyHeader(NBD_OPT_STRUCTURED_REPLY);
    }

    fn reply_header(&mut self, opt: u32, b: &[u8]) {
        let mut r = Reader::new(b);
        let (Some(magic), Some(option), Some(kind), Some(len)) =
            (r.u64(), r.u32(), r.u32(), r.u32())
        else {
            return self.fail(ClientHandshakeError::Malformed("short header"));
        };
        if magic != NBD_REP_MAGIC {
            return self.fail(ClientHandshakeError::Malformed("reply magic"));
        }
        if option != opt {
            return self.fail(ClientHandshakeError::Malformed("reply to another option"));
        }
        if len > MAX_OPTION_REPLY {
            return self.fail(ClientHandshakeError::Malformed("reply too long"));
        }
        if len == 0 {
            return self.reply(option, kind, &[]);
        }
        self.state = State::ReplyPayload { option, kind, len };
    }

    fn send_meta(&mut self) {
        let mut data = Vec::new();
        name_field(&mut data, &self.export);
        match &self.x_dirty_bitmap {
            Some(ctx) => {
                put_u32(&mut data, 1);
                name_field(&mut data, ctx);
            }
            None => {
                put_u32(&mut data, 2);
                name_field(&mut data, CONTEXT_BASE_ALLOCATION);
                name_field(&mut data, CONTEXT_QEMU_ALLOCATION_DEPTH);
            }
        }
        option(&mut self.out, NBD_OPT_SET_META_CONTEXT, &data);
        self.state = State::ReplyHeader(NBD_OPT_SET_META_CONTEXT);
    }

    fn send_go(&mut self) {
        let mut data = Vec::new();
        name_field(&mut data, &self.export);
        put_u16(&mut data, 1);
        put_u16(&mut data, NBD_INFO_BLOCK_SIZE);
        option(&mut self.out, NBD_OPT_GO, &data);
        self.state = State::ReplyHeader(NBD_OPT_GO);
    }

    fn reply(&mut self, option: u32, kind: u32, payload: &[u8]) {
        let error = kind & (1 << 31) != 0;
        match option {
            NBD_OPT_STARTTLS => self.starttls_reply(kind, payload),
            NBD_OPT_STRUCTURED_REPLY => {
                self.info.structured = kind == NBD_REP_ACK;
                if self.info.structured {
                    self.send_meta()
                } else {
                    self.send_go()
                }
            }
            NBD_OPT_SET_META_CONTEXT => match kind {
                NBD_REP_META_CONTEXT => {
                    let mut r = Reader::new(payload);
                    let Some(id) = r.u32() else {
                        return self.fail(ClientHandshakeError::Malformed("meta context"));
                    };
                    let name = r.bytes(r.remaining()).unwrap_or(&[]);
                    if let Some(ctx) = &self.x_dirty_bitmap {
                        if name == ctx.as_bytes() {
                            self.info.base_allocation = Some(id);
                        }
                    } else if name == CONTEXT_BASE_ALLOCATION.as_bytes() {
                        self.info.base_allocation = Some(id);
                    } else if name == CONTEXT_QEMU_ALLOCATION_DEPTH.as_bytes() {
                        self.info.allocation_depth = Some(id);
                    }
                    self.state = State::ReplyHeader(option);
                }
                // ACK ends the list; an error means no contexts: block
                // status then reports everything as data.
                _ => {
                    if error {
                        self.info.base_allocation = None;
                        self.info.allocation_depth = None;
                    }
                    self.send_go()
                }
            },
            NBD_OPT_GO => self.go_reply(kind, payload),
            _ => self.fail(ClientHandshakeError::Malformed("unexpected option")),
        }
    }

    fn go_reply(&mut self, kind: u32, payload: &[u8]) {
        match kind {
            NBD_REP_INFO => {
                let mut r = Reader::new(payload);
                match r.u16() {
                    Some(NBD_INFO_EXPORT) => {
                        let (Some(size), Some(flags)) = (r.u64(), r.u16()) else {
                            return self.fail(ClientHandshakeError::Malformed("export info"));
                        };
                        self.info.size = size;
                        self.info.transmission_flags = flags;
                        self.have_export_info = true;
                    }
                    Some(NBD_INFO_BLOCK_SIZE) => {
                        let (Some(min), Some(pref), Some(max)) = (r.u32(), r.u32(), r.u32()) else {
                            return self.fail(ClientHandshakeError::Malformed("block size info"));
                        };
                        self.info.min_block = min.max(1);
                        self.info.preferred_block = pref.max(1);
                        self.info.max_block = max.clamp(1, NBD_MAX_PAYLOAD);
                    }
                    _ => {}
                }
                self.state = State::ReplyHeader(NBD_OPT_GO);
            }
            NBD_REP_ACK if self.have_export_info => {
                if let (Some(ctx), None) = (&self.x_dirty_bitmap, self.info.base_allocation) {
                    let text = format!("requested x-dirty-bitmap {ctx} not found");
                    return self.fail(ClientHandshakeError::Refused(text));
                }
                self.result = Some(Ok(self.info.clone()));
                self.state = State::Finished;
            }
            NBD_REP_ACK => self.fail(ClientHandshakeError::Malformed("no export info")),
            k if k & (1 << 31) != 0 => self.fail(ClientHandshakeError::Refused(refusal(
                NBD_OPT_GO, k, payload,
            ))),
            _ => self.fail(ClientHandshakeError::Malformed("GO reply")),
        }
    }

    /// QEMU's `nbd_receive_starttls`: only an empty ACK upgrades.
    fn starttls_reply(&mut self, kind: u32, payload: &[u8]) {
        match kind {
            NBD_REP_ACK if payload.is_empty() => self.state = State::StartTls,
            NBD_REP_ACK => self.fail(ClientHandshakeError::Refused(format!(
                "Start TLS response was not zero {}",
                payload.len()
            ))),
            NBD_REP_ERR_UNSUP => self.fail(ClientHandshakeError::Refused(
                "Server don't support STARTTLS option".into(),
            )),
            k if k & (1 << 31) != 0 => self.fail(ClientHandshakeError::Refused(refusal(
                NBD_OPT_STARTTLS,
                k,
                payload,
            ))),
            k => self.fail(ClientHandshakeError::Refused(format!(
                "Server rejected request to start TLS {k:x}"
            ))),
        }
    }
}

/// QEMU's name of an option (`nbd_opt_lookup`).
fn option_name(opt: u32) -> &'static str {
    match opt {
        NBD_OPT_EXPORT_NAME => "export-name",
        NBD_OPT_ABORT => "abort",
        NBD_OPT_LIST => "list",
        NBD_OPT_PEEK_EXPORT => "peek-export",
        NBD_OPT_STARTTLS => "starttls",
        NBD_OPT_INFO => "info",
        NBD_OPT_GO => "go",
        NBD_OPT_STRUCTURED_REPLY => "structured-reply",
        NBD_OPT_LIST_META_CONTEXT => "list-meta-context",
        NBD_OPT_SET_META_CONTEXT => "set-meta-context",
        NBD_OPT_EXTENDED_HEADERS => "extended-headers",
        _ => "<unknown>",
    }
}

/// The text QEMU's `nbd_handle_reply_err` gives an error reply to
/// `option`, with the server's message after it.
fn refusal(option: u32, kind: u32, payload: &[u8]) -> String {
    let name = option_name(option);
    let what = match kind {
        NBD_REP_ERR_UNKNOWN => "Requested export not available".to_string(),
        NBD_REP_ERR_POLICY => format!("Denied by server for option {option} ({name})"),
        NBD_REP_ERR_INVALID => format!("Invalid parameters for option {option} ({name})"),
        NBD_REP_ERR_PLATFORM => format!("Server lacks support for option {option} ({name})"),
        NBD_REP_ERR_TLS_REQD => format!("TLS negotiation required before option {option} ({name})"),
        NBD_REP_ERR_SHUTDOWN => format!("Server shutting down before option {option} ({name})"),
        NBD_REP_ERR_BLOCK_SIZE_REQD => {
            format!("Server requires INFO_BLOCK_SIZE for option {option} ({name})")
        }
        NBD_REP_ERR_TOO_BIG => format!("option {option} ({name}) was too big"),
        _ => format!("Unknown error code when asking for option {option} ({name})"),
    };
    let msg = String::from_utf8_lossy(payload);
    if msg.is_empty() {
        what
    } else {
        format!("{what}: server reported: {msg}")
    }
}
