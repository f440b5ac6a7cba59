//! Handlers for the handshake options that carry data or produce several
//! replies: `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO`/`NBD_OPT_GO`,
//! `NBD_OPT_LIST` and `NBD_OPT_{LIST,SET}_META_CONTEXT`. They run on a
//! fully buffered (and bounded) option payload; framing lives in
//! `handshake.rs`. Behaviour mirrors QEMU's `nbd/server.c`.
#![forbid(unsafe_code)]

use super::consts::*;
use super::export::{effective_flags, ExportCatalog, ExportInfo};
use super::handshake::{HandshakeError, Negotiated, Negotiator, Outcome};
use super::meta::Selection;
use super::wire::{len32, put_u16, put_u32, put_u64, truncate_utf8, Reader};

/// Why an option payload could not be parsed; answered with
/// `NBD_REP_ERR_INVALID`.
const INCONSISTENT: &str = "inconsistent lengths in option";

/// Export name of at most 80 chars for error messages (QEMU does the same).
fn sanitize(name: &str) -> String {
    if name.chars().count() < 80 {
        name.to_string()
    } else {
        format!("{}...", name.chars().take(80).collect::<String>())
    }
}

/// Read a `u32 length + string` field: `Err(msg)` on short input, length
/// above the string limit, embedded NUL or bad UTF-8.
fn read_name<'a>(r: &mut Reader<'a>) -> Result<&'a str, &'static str> {
    let len = r.u32().ok_or(INCONSISTENT)? as usize;
    if len > NBD_MAX_STRING_SIZE {
        return Err("invalid name length");
    }
    let bytes = r.bytes(len).ok_or(INCONSISTENT)?;
    if bytes.contains(&0) {
        return Err("unexpected embedded NUL in option");
    }
    std::str::from_utf8(bytes).map_err(|_| "name is not valid UTF-8")
}

/// Block sizes as advertised: made self-consistent and capped at our
/// maximum payload so request validation and the client agree.
fn block_sizes(info: &ExportInfo) -> (u32, u32, u32) {
    let min = info.min_block.max(1);
    let pref = info.preferred_block.max(min).max(512);
    let max = info.max_block.min(NBD_MAX_PAYLOAD).max(pref);
    (min, pref, max)
}

impl Negotiator {
    /// Contexts selected for `info` (only if the last SET named it).
    fn contexts_for(&self, info: &ExportInfo) -> Vec<(u32, super::export::MetaContext)> {
        match &self.meta {
            Some((name, ctx)) if *name == info.name => ctx.clone(),
            _ => Vec::new(),
        }
    }

    /// The export as advertised in this session.
    fn advertised(&self, mut info: ExportInfo) -> ExportInfo {
        let has_contexts = !self.contexts_for(&info).is_empty();
        let mut flags = effective_flags(info.transmission_flags, self.structured, self.extended);
        if !has_contexts {
            // Payload form of block status is useless without contexts (QEMU).
            flags &= !NBD_FLAG_BLOCK_STATUS_PAYLOAD;
        }
        info.transmission_flags = flags;
        let (min, pref, max) = block_sizes(&info);
        info.min_block = min;
        info.preferred_block = pref;
        info.max_block = max;
        info
    }

    fn negotiated(&self, export_name: String, info: ExportInfo, acked: bool) -> Outcome {
        let meta_contexts = self.contexts_for(&info);
        Outcome::Negotiated(Box::new(Negotiated {
            export_name,
            info,
            structured: self.structured,
            extended: self.extended,
            meta_contexts,
            no_zeroes: self.no_zeroes,
            block_size_acked: acked,
        }))
    }

    pub(super) fn handle_export_name(&mut self, payload: &[u8], catalog: &dyn ExportCatalog) {
        if self.extended {
            // The spec forbids it; there is no way to return an error.
            self.finish(Outcome::Failed(
                HandshakeError::ExportNameWithExtendedHeaders,
            ));
            return;
        }
        let Ok(name) = std::str::from_utf8(payload) else {
            self.finish(Outcome::Failed(HandshakeError::ExportNameNotUtf8));
            return;
        };
        let Some(info) = catalog.lookup(name) else {
            self.finish(Outcome::Failed(HandshakeError::UnknownExport(sanitize(
                name,
            ))));
            return;
        };
        let info = self.advertised(info);
        let mut buf = Vec::with_capacity(10 + EXPORT_NAME_PADDING);
        put_u64(&mut buf, info.size);
        put_u16(&mut buf, info.transmission_flags);
        if !self.no_zeroes {
            buf.resize(10 + EXPORT_NAME_PADDING, 0);
        }
        self.push(&buf);
        let outcome = self.negotiated(name.to_string(), info, false);
        self.finish(outcome);
    }

    pub(super) fn handle_info(&mut self, option: u32, payload: &[u8], catalog: &dyn ExportCatalog) {
        let mut r = Reader::new(payload);
        let name = match read_name(&mut r) {
            Ok(n) => n,
            Err(msg) => return self.rep_err(option, NBD_REP_ERR_INVALID, msg),
        };
        let Some(count) = r.u16() else {
            return self.rep_err(option, NBD_REP_ERR_INVALID, INCONSISTENT);
        };
        let (mut want_name, mut want_block) = (false, false);
        for _ in 0..count {
            match r.u16() {
                Some(NBD_INFO_NAME) => want_name = true,
                Some(NBD_INFO_BLOCK_SIZE) => want_block = true,
                Some(_) => {}
                None => return self.rep_err(option, NBD_REP_ERR_INVALID, INCONSISTENT),
            }
        }
        if r.remaining() != 0 {
            return self.rep_err(option, NBD_REP_ERR_INVALID, "option has unexpected length");
        }
        let Some(info) = catalog.lookup(name) else {
            let msg = format!("export '{}' not present", sanitize(name));
            return self.rep_err(option, NBD_REP_ERR_UNKNOWN, &msg);
        };
        let info = self.advertised(info);

        if want_name && info.name.len() <= NBD_MAX_STRING_SIZE {
            self.send_info(option, NBD_INFO_NAME, info.name.as_bytes());
        }
        if !info.description.is_empty() {
            let d = truncate_utf8(&info.description, NBD_MAX_DESCRIPTION_SIZE);
            self.send_info(option, NBD_INFO_DESCRIPTION, d.as_bytes());
        }
        let mut sizes = Vec::with_capacity(12);
        put_u32(&mut sizes, info.min_block);
        put_u32(&mut sizes, info.preferred_block);
        put_u32(&mut sizes, info.max_block);
        self.send_info(option, NBD_INFO_BLOCK_SIZE, &sizes);
        let mut export = Vec::with_capacity(10);
        put_u64(&mut export, info.size);
        put_u16(&mut export, info.transmission_flags);
        self.send_info(option, NBD_INFO_EXPORT, &export);

        if option == NBD_OPT_INFO && !want_block && info.min_block > 1 {
            return self.rep_err(
                option,
                NBD_REP_ERR_BLOCK_SIZE_REQD,
                "request NBD_INFO_BLOCK_SIZE to use this export",
            );
        }
        self.rep(option, NBD_REP_ACK, &[]);
        if option == NBD_OPT_GO {
            let outcome = self.negotiated(name.to_string(), info, want_block);
            self.finish(outcome);
        }
    }

    fn send_info(&mut self, option: u32, kind: u16, body: &[u8]) {
        self.rep_header(option, NBD_REP_INFO, 2 + body.len());
        self.push(&kind.to_be_bytes());
        self.push(body);
    }

    pub(super) fn handle_list(&mut self, catalog: &dyn ExportCatalog) {
        for (name, desc) in catalog.list() {
            if name.len() > NBD_MAX_STRING_SIZE {
                continue; // cannot be named by a client anyway
            }
            let desc = truncate_utf8(&desc, NBD_MAX_DESCRIPTION_SIZE);
            self.rep_header(NBD_OPT_LIST, NBD_REP_SERVER, 4 + name.len() + desc.len());
            self.push(&len32(name.len()).to_be_bytes());
            self.push(name.as_bytes());
            self.push(desc.as_bytes());
        }
        self.rep(NBD_OPT_LIST, NBD_REP_ACK, &[]);
    }

    pub(super) fn handle_meta(&mut self, option: u32, payload: &[u8], catalog: &dyn ExportCatalog) {
        let list = option == NBD_OPT_LIST_META_CONTEXT;
        if !list {
            // A SET replaces the previous selection even when it fails.
            self.meta = None;
        }
        let mut r = Reader::new(payload);
        let name = match read_name(&mut r) {
            Ok(n) => n,
            Err(msg) => return self.rep_err(option, NBD_REP_ERR_INVALID, msg),
        };
        let Some(info) = catalog.lookup(name) else {
            let msg = format!("export '{}' not present", sanitize(name));
            return self.rep_err(option, NBD_REP_ERR_UNKNOWN, &msg);
        };
        let Some(count) = r.u32() else {
            return self.rep_err(option, NBD_REP_ERR_INVALID, INCONSISTENT);
        };
        let mut sel = if list && count == 0 {
            Selection::all(&info)
        } else {
            Selection::none(&info)
        };
        for _ in 0..count {
            let Some(len) = r.u32() else {
                return self.rep_err(option, NBD_REP_ERR_INVALID, INCONSISTENT);
            };
            let Some(query) = r.bytes(len as usize) else {
                return self.rep_err(option, NBD_REP_ERR_INVALID, INCONSISTENT);
            };
            if query.len() > NBD_MAX_STRING_SIZE {
                continue; // QEMU skips over-long queries
            }
            if query.contains(&0) {
                return self.rep_err(
                    option,
                    NBD_REP_ERR_INVALID,
                    "unexpected embedded NUL in option",
                );
            }
            // Non-UTF-8 cannot name any namespace we know: ignore it.
            if let Ok(q) = std::str::from_utf8(query) {
                sel.apply(&info, q, list);
            }
        }
        if r.remaining() != 0 {
            return self.rep_err(option, NBD_REP_ERR_INVALID, "option has unexpected length");
        }
        let contexts = sel.contexts(&info);
        for (id, ctx) in &contexts {
            let cname = ctx.name();
            self.rep_header(option, NBD_REP_META_CONTEXT, 4 + cname.len());
            self.push(&(if list { 0 } else { *id }).to_be_bytes());
            self.push(cname.as_bytes());
        }
        self.rep(option, NBD_REP_ACK, &[]);
        if !list {
            self.meta = Some((info.name.clone(), contexts));
        }
    }
}
