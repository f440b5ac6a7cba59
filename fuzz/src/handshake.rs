//! Oracle for the `nbd_handshake` target: a test catalog, a parser of the
//! client byte stream into options, and a checker that the server's option
//! replies answer exactly those options, in order, with well-formed frames
//! (and, before TLS on a server that requires it, with `TLS_REQD`).

use drivers::nbd::proto::consts::*;
use drivers::nbd::proto::{
    ExportCatalog, ExportInfo, HandshakeError, MetaContext, Negotiated, Outcome,
};

/// Two exports: "disk" (writable, allocation depth, one bitmap, 512-byte
/// minimum block, a description) and "ro" (read-only, nothing extra).
#[derive(Debug, Default)]
pub struct TestCatalog;

pub fn disk() -> ExportInfo {
    ExportInfo {
        name: "disk".into(),
        description: "fuzz disk".into(),
        size: 1 << 30,
        transmission_flags: NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA
            | NBD_FLAG_SEND_TRIM
            | NBD_FLAG_SEND_WRITE_ZEROES
            | NBD_FLAG_SEND_FAST_ZERO
            | NBD_FLAG_SEND_DF
            | NBD_FLAG_CAN_MULTI_CONN
            | NBD_FLAG_SEND_CACHE
            | NBD_FLAG_BLOCK_STATUS_PAYLOAD,
        min_block: 512,
        preferred_block: 4096,
        max_block: 32 << 20,
        allocation_depth: true,
        bitmaps: vec!["bitmap0".into()],
    }
}

pub fn ro() -> ExportInfo {
    ExportInfo {
        name: "ro".into(),
        description: String::new(),
        size: 65536,
        transmission_flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY,
        min_block: 1,
        preferred_block: 4096,
        max_block: 1 << 20,
        allocation_depth: false,
        bitmaps: vec![],
    }
}

impl ExportCatalog for TestCatalog {
    fn list(&self) -> Vec<(String, String)> {
        vec![
            ("disk".into(), "fuzz disk".into()),
            ("ro".into(), String::new()),
        ]
    }
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        match name {
            // "" is the default export, as in QEMU.
            "disk" | "" => Some(disk()),
            "ro" => Some(ro()),
            _ => None,
        }
    }
}

/// One option as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOpt {
    pub code: u32,
    pub len: u32,
    /// Header and whole payload present (ABORT: header present; the server
    /// does not read an ABORT payload).
    pub complete: bool,
}

/// Split the bytes the server consumed into the client's options.
pub fn client_options(stream: &[u8]) -> Vec<ClientOpt> {
    let mut opts = Vec::new();
    let mut pos = 4usize; // client flags
    while pos + OPTION_HEADER_LEN <= stream.len() {
        let h = &stream[pos..pos + OPTION_HEADER_LEN];
        let code = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        pos += OPTION_HEADER_LEN;
        if code == NBD_OPT_ABORT {
            opts.push(ClientOpt {
                code,
                len,
                complete: true,
            });
            break;
        }
        let complete = stream.len() - pos >= len as usize;
        opts.push(ClientOpt {
            code,
            len,
            complete,
        });
        if !complete {
            break;
        }
        pos += len as usize;
    }
    opts
}

/// One option reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub option: u32,
    pub kind: u32,
    pub payload: Vec<u8>,
}

pub fn is_final(kind: u32) -> bool {
    kind == NBD_REP_ACK || kind & (1 << 31) != 0
}

/// Parse a sequence of option replies; every byte must belong to one.
pub fn parse_replies(mut b: &[u8]) -> Result<Vec<Rep>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < OPTION_REPLY_HEADER_LEN {
            return Err(format!("{} trailing bytes", b.len()));
        }
        if b[..8] != NBD_REP_MAGIC.to_be_bytes() {
            return Err("bad option reply magic".into());
        }
        let option = u32::from_be_bytes(b[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(b[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        let payload = b
            .get(20..20 + len)
            .ok_or_else(|| format!("reply length {len} runs past the output"))?
            .to_vec();
        b = &b[20 + len..];
        out.push(Rep {
            option,
            kind,
            payload,
        });
    }
    Ok(out)
}

/// Check one reply's payload shape.
fn check_reply(r: &Rep) -> Result<(), String> {
    let p = &r.payload;
    match r.kind {
        NBD_REP_ACK => {
            if !p.is_empty() {
                return Err("ACK with payload".into());
            }
        }
        NBD_REP_SERVER => {
            if r.option != NBD_OPT_LIST {
                return Err("SERVER reply outside LIST".into());
            }
            let n = u32::from_be_bytes(p.get(..4).ok_or("short SERVER")?.try_into().unwrap());
            if n as usize > p.len() - 4 || n as usize > NBD_MAX_STRING_SIZE {
                return Err("SERVER name length".into());
            }
        }
        NBD_REP_INFO => {
            if r.option != NBD_OPT_INFO && r.option != NBD_OPT_GO {
                return Err("INFO reply outside INFO/GO".into());
            }
            let t = u16::from_be_bytes(p.get(..2).ok_or("short INFO")?.try_into().unwrap());
            let want = match t {
                NBD_INFO_EXPORT => Some(12),
                NBD_INFO_BLOCK_SIZE => Some(14),
                NBD_INFO_NAME | NBD_INFO_DESCRIPTION => None,
                _ => return Err(format!("unknown info type {t}")),
            };
            if want.is_some_and(|w| w != p.len()) {
                return Err(format!("info {t} length {}", p.len()));
            }
            if p.len() - 2 > NBD_MAX_STRING_SIZE {
                return Err("info string too long".into());
            }
        }
        NBD_REP_META_CONTEXT => {
            if r.option != NBD_OPT_LIST_META_CONTEXT && r.option != NBD_OPT_SET_META_CONTEXT {
                return Err("META_CONTEXT reply outside meta options".into());
            }
            if p.len() < 5 || p.len() - 4 > NBD_MAX_STRING_SIZE {
                return Err("META_CONTEXT length".into());
            }
            std::str::from_utf8(&p[4..]).map_err(|_| "context name not UTF-8")?;
        }
        k if k & (1 << 31) != 0 => {
            if p.len() > NBD_MAX_STRING_SIZE {
                return Err("error message over 4096 bytes".into());
            }
            std::str::from_utf8(p).map_err(|_| "error message not UTF-8")?;
        }
        k => return Err(format!("unknown reply type {k:#x}")),
    }
    Ok(())
}

/// Check the whole server transcript (output after the greeting) against
/// the bytes the server consumed and the outcome it reported.
pub fn check_transcript(
    consumed: &[u8],
    transcript: &[u8],
    outcome: Option<&Outcome>,
    cat: &TestCatalog,
) -> Result<(), String> {
    let mut opts = client_options(consumed);
    // The option that ended a failed handshake gets no reply; a trailing
    // incomplete option has not been answered yet.
    match outcome {
        Some(Outcome::Failed(_)) => {
            opts.pop();
        }
        None => {
            if opts.last().is_some_and(|o| !o.complete) {
                opts.pop();
            }
        }
        Some(_) => {
            if opts.last().is_none_or(|o| !o.complete) {
                return Err("finished without a complete final option".into());
            }
        }
    }
    let mut replies_bytes = transcript;
    let by_export_name = matches!(outcome, Some(Outcome::Negotiated(_)))
        && opts.last().map(|o| o.code) == Some(NBD_OPT_EXPORT_NAME);
    if by_export_name {
        let Some(Outcome::Negotiated(n)) = outcome else {
            unreachable!()
        };
        let tail = if n.no_zeroes {
            10
        } else {
            10 + EXPORT_NAME_PADDING
        };
        if transcript.len() < tail {
            return Err("EXPORT_NAME reply too short".into());
        }
        let (head, t) = transcript.split_at(transcript.len() - tail);
        if t[..8] != n.info.size.to_be_bytes()
            || t[8..10] != n.info.transmission_flags.to_be_bytes()
        {
            return Err("EXPORT_NAME reply does not match the outcome".into());
        }
        if t[10..].iter().any(|&b| b != 0) {
            return Err("EXPORT_NAME padding not zero".into());
        }
        replies_bytes = head;
    }
    let replies = parse_replies(replies_bytes)?;
    let expected: Vec<u32> = opts
        .iter()
        .map(|o| o.code)
        .filter(|&c| c != NBD_OPT_EXPORT_NAME)
        .collect();
    let mut finals = Vec::new();
    let mut group: Option<u32> = None;
    for r in &replies {
        check_reply(r)?;
        if let Some(g) = group {
            if g != r.option {
                return Err(format!(
                    "reply for option {} inside replies for {g}",
                    r.option
                ));
            }
        }
        if is_final(r.kind) {
            finals.push(r.option);
            group = None;
        } else {
            group = Some(r.option);
        }
    }
    if group.is_some() {
        return Err("non-final reply without a final one".into());
    }
    if finals != expected {
        return Err(format!(
            "final replies {finals:?} do not answer options {expected:?}"
        ));
    }
    match outcome {
        Some(Outcome::Aborted) => {
            let last = replies.last().ok_or("ABORT without ACK")?;
            if last.option != NBD_OPT_ABORT || last.kind != NBD_REP_ACK {
                return Err("ABORT not ACKed last".into());
            }
        }
        Some(Outcome::Negotiated(n)) => {
            if !by_export_name {
                let last = replies.last().ok_or("GO without ACK")?;
                if last.option != NBD_OPT_GO || last.kind != NBD_REP_ACK {
                    return Err("GO not ACKed last".into());
                }
            }
            check_negotiated(n, cat)?;
        }
        _ => {}
    }
    Ok(())
}

fn check_negotiated(n: &Negotiated, cat: &TestCatalog) -> Result<(), String> {
    let base = cat
        .lookup(&n.export_name)
        .ok_or("negotiated an unknown export")?;
    if base.name != n.info.name || base.size != n.info.size {
        return Err("negotiated info does not match the catalog".into());
    }
    if n.extended && !n.structured {
        return Err("extended without structured".into());
    }
    let f = n.info.transmission_flags;
    if f & NBD_FLAG_HAS_FLAGS == 0 {
        return Err("HAS_FLAGS missing".into());
    }
    if !n.structured && f & NBD_FLAG_SEND_DF != 0 {
        return Err("DF advertised without structured replies".into());
    }
    if !n.extended && f & NBD_FLAG_BLOCK_STATUS_PAYLOAD != 0 {
        return Err("BLOCK_STATUS_PAYLOAD without extended headers".into());
    }
    let i = &n.info;
    if !(1 <= i.min_block && i.min_block <= i.preferred_block && i.preferred_block <= i.max_block)
        || i.max_block > NBD_MAX_PAYLOAD
    {
        return Err(format!(
            "inconsistent block sizes {} {} {}",
            i.min_block, i.preferred_block, i.max_block
        ));
    }
    let mut ids: Vec<u32> = n.meta_contexts.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n.meta_contexts.len() {
        return Err("duplicate context ids".into());
    }
    if !n.meta_contexts.is_empty() && !n.structured {
        return Err("contexts without structured replies".into());
    }
    for (_, c) in &n.meta_contexts {
        let ok = match c {
            MetaContext::BaseAllocation => true,
            MetaContext::AllocationDepth => base.allocation_depth,
            MetaContext::DirtyBitmap(b) => base.bitmaps.contains(b),
        };
        if !ok {
            return Err(format!("context {c:?} not offered by the export"));
        }
    }
    Ok(())
}

/// The transcript of a server that requires TLS, up to the upgrade: every
/// option is answered `NBD_REP_ERR_TLS_REQD`, except `NBD_OPT_STARTTLS`
/// (ACK, which ends this part with [`Outcome::StartTls`]; with a payload,
/// `NBD_REP_ERR_INVALID` and the client is dropped). `NBD_OPT_EXPORT_NAME`
/// and protocol errors drop the client without a reply.
pub fn check_before_tls(
    consumed: &[u8],
    transcript: &[u8],
    outcome: Option<&Outcome>,
) -> Result<(), String> {
    let mut opts = client_options(consumed);
    match outcome {
        Some(Outcome::Failed(HandshakeError::StartTlsPayload)) => {}
        Some(Outcome::Failed(_)) => {
            opts.pop();
        }
        None => {
            if opts.last().is_some_and(|o| !o.complete) {
                opts.pop();
            }
        }
        Some(Outcome::Negotiated(_)) => return Err("negotiated without TLS".into()),
        Some(Outcome::Aborted | Outcome::StartTls) => {
            if opts.last().is_none_or(|o| !o.complete) {
                return Err("finished without a complete final option".into());
            }
        }
    }
    let replies = parse_replies(transcript)?;
    if replies.len() != opts.len() {
        return Err(format!(
            "{} replies to {} options before TLS",
            replies.len(),
            opts.len()
        ));
    }
    for (i, (o, r)) in opts.iter().zip(&replies).enumerate() {
        check_reply(r)?;
        let last = i + 1 == opts.len();
        let want = match o.code {
            NBD_OPT_STARTTLS if o.len == 0 => NBD_REP_ACK,
            NBD_OPT_STARTTLS => NBD_REP_ERR_INVALID,
            NBD_OPT_EXPORT_NAME => return Err("EXPORT_NAME answered before TLS".into()),
            _ => NBD_REP_ERR_TLS_REQD,
        };
        if r.option != o.code || r.kind != want {
            return Err(format!(
                "option {} got reply {:#x} for {} before TLS",
                o.code, r.kind, r.option
            ));
        }
        if o.code == NBD_OPT_STARTTLS && !last {
            return Err("options answered after STARTTLS in plaintext".into());
        }
    }
    match (outcome, replies.last()) {
        (Some(Outcome::StartTls), Some(r)) if r.kind == NBD_REP_ACK => Ok(()),
        (Some(Outcome::StartTls), _) => Err("StartTls without the ACK".into()),
        (Some(Outcome::Aborted), Some(r)) if r.option == NBD_OPT_ABORT => Ok(()),
        (Some(Outcome::Aborted), _) => Err("ABORT not answered".into()),
        _ => Ok(()),
    }
}
