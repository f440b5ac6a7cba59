//! QAPI types for the commands and options ringstor implements, with
//! member names as in QEMU's schema, and the input layer that gives
//! QEMU's error messages.

mod bitmap;
mod block;
mod export;
mod input;
mod nbd;
mod object;
mod qcow2;
mod tls;
mod vduse_blk;
mod vhost_user_blk;

#[cfg(test)]
mod tests;

pub use bitmap::{BitmapAction, BitmapAddArgs, BitmapArgs, BitmapMergeArgs, TransactionArgs};
pub use block::{
    BlockdevBase, BlockdevOptions, BlockdevRef, CacheOptions, DetectZeroes, DriverOptions,
    FileDriverOptions, NullDriverOptions, OnOffAuto, RawDriverOptions,
};
pub use export::{
    BitmapRef, BlockExportDelArgs, BlockExportOptions, ExportBase, ExportKind, FuseAllowOtherArg,
    FuseExportArgs, IothreadSpec, NbdExportArgs, RemoveModeArg, NBD_MAX_STRING_SIZE,
};
pub use input::{from_args, Input, InputError, Syntax};
pub use nbd::{NbdServerAddOptions, NbdServerOptions, NbdServerRemoveArgs, SocketAddress};
pub use object::{is_identifier, IothreadOptions, MetricsOptions, ObjectOptions};
pub use qcow2::{BackingChoice, Qcow2DriverOptions};
pub use tls::{
    AuthzFormat, AuthzListFileOptions, AuthzListOptions, AuthzListRules, AuthzPolicy, AuthzRule,
    AuthzSimpleOptions, TlsCredsPskOptions, TlsCredsX509Options, TlsEndpoint,
};
pub use vduse_blk::{VduseBlkArgs, VduseBlkChecked};
pub use vhost_user_blk::VhostUserBlkArgs;
