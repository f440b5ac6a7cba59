//! `block-export-add`, `block-export-del`, `query-block-exports`.

use drivers::export::RemoveMode;
use engine::block::Perm;
use serde_json::{Map, Value};

use super::no_args;
use crate::daemon::{Daemon, HARD_DEL_WAIT};
use crate::error::{ControlError, Result};
use crate::nbd::NbdExportOptions;
use crate::qapi::{
    from_args, BlockExportDelArgs, BlockExportOptions, ExportBase, ExportKind, FuseAllowOtherArg,
    Input, RemoveModeArg, Syntax,
};

/// `block-export-add` / `--export`.
pub fn block_export_add(d: &mut Daemon, input: Input) -> Result<Value> {
    let opts = BlockExportOptions::parse(input)?;
    add_export(d, opts.base, opts.kind)
}

pub(super) fn block_export_add_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    block_export_add(d, Input::new(args, Syntax::Json))
}

/// The common path of `block-export-add` and `nbd-server-add`, in the
/// order of QEMU's `blk_exp_add()`: id, node, iothread, read-only and
/// permissions, then the driver's own checks (whose failure drops the
/// permissions again).
pub(super) fn add_export(d: &mut Daemon, base: ExportBase, kind: ExportKind) -> Result<Value> {
    d.exports.check_id(&base.id)?;
    let node = match d.blocks.get(&base.node_name) {
        Some(e) => e.node.clone(),
        None => {
            return Err(ControlError::failed(format!(
                "Cannot find device='' nor node-name='{}'",
                base.node_name
            )))
        }
    };
    // QEMU's NBD server does not let the image be resized under its
    // clients (nbd_export_create unshares RESIZE); later drivers (FUSE
    // with `growable`) may share it.
    let shared = match &kind {
        ExportKind::Nbd(_) => Perm::ALL.minus(Perm::RESIZE),
        // QSD's FUSE export shares everything (and takes RESIZE itself).
        ExportKind::Fuse(_) => Perm::ALL,
        // QEMU's vhost-user-blk server follows resizes (config change).
        ExportKind::VhostUserBlk(_) => Perm::ALL,
        // So does QEMU's vduse-blk export.
        ExportKind::VduseBlk(_) => Perm::ALL,
    };
    let prepared = d.exports.prepare(&base, &node, &d.objects, shared)?;
    match kind {
        ExportKind::Nbd(nbd) => {
            let Some(server) = &d.nbd else {
                return Err(ControlError::failed("NBD server not running"));
            };
            let name = nbd.name.clone().unwrap_or_else(|| base.node_name.clone());
            if server.has_export_name(&name) {
                return Err(ControlError::failed(format!(
                    "NBD server already has export named '{name}'"
                )));
            }
            let bitmaps = crate::bitmaps::for_export(
                &d.blocks,
                &node,
                nbd.bitmaps.as_deref().unwrap_or_default(),
                prepared.common.writable,
            )?;
            let export = server.add_export(
                prepared.common.clone(),
                NbdExportOptions {
                    name,
                    description: nbd.description,
                    allocation_depth: nbd.allocation_depth.unwrap_or(false),
                    bitmaps,
                },
            )?;
            d.exports.insert(prepared, export);
        }
        ExportKind::Fuse(fuse) => {
            let export = drivers::fuse::FuseExport::start(
                prepared.common.clone(),
                drivers::fuse::FuseExportOptions {
                    mountpoint: fuse.mountpoint,
                    growable: fuse.growable.unwrap_or(false),
                    allow_other: match fuse.allow_other {
                        Some(FuseAllowOtherArg::Off) => drivers::fuse::AllowOther::Off,
                        Some(FuseAllowOtherArg::On) => drivers::fuse::AllowOther::On,
                        Some(FuseAllowOtherArg::Auto) | None => drivers::fuse::AllowOther::Auto,
                    },
                    io_uring: fuse.io_uring,
                },
            )?;
            d.exports.insert(prepared, Box::new(export));
        }
        ExportKind::VhostUserBlk(args) => {
            let export = super::vhost_user_blk::create(d, &prepared, &args)?;
            d.exports.insert(prepared, export);
        }
        ExportKind::VduseBlk(args) => {
            let export = super::vduse_blk::create(&prepared, &base.id, &args)?;
            d.exports.insert(prepared, export);
        }
    }
    Ok(Value::Null)
}

/// `block-export-del`.
pub(super) fn block_export_del(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BlockExportDelArgs = from_args(args)?;
    let mode = match a.mode {
        Some(RemoveModeArg::Hard) => RemoveMode::Hard,
        _ => RemoveMode::Safe,
    };
    d.exports.remove(&a.id, mode)?;
    if mode == RemoveMode::Hard {
        d.wait_drained(std::slice::from_ref(&a.id), HARD_DEL_WAIT);
    }
    Ok(Value::Null)
}

/// `query-block-exports`.
pub(super) fn query_block_exports(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    Ok(d.exports.query())
}
