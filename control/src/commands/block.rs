//! `blockdev-add`, `blockdev-del`, `query-named-block-nodes`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::daemon::Daemon;
use crate::error::Result;
use crate::qapi::{from_args, BlockdevOptions, Input, Syntax};

/// `blockdev-add` / `--blockdev`.
pub fn blockdev_add(d: &mut Daemon, input: Input) -> Result<Value> {
    let opts = BlockdevOptions::parse(input)?;
    let refs = crate::blocks::Refs {
        secrets: &d.secrets,
        objects: &d.objects,
    };
    d.blocks.add(opts, refs)?;
    Ok(Value::Null)
}

pub(super) fn blockdev_add_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    blockdev_add(d, Input::new(args, Syntax::Json))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DelArgs {
    node_name: String,
}

/// `blockdev-del`: refused while a parent or an export uses the node.
pub(super) fn blockdev_del(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: DelArgs = from_args(args)?;
    // A node whose bitmap an export of another node offers is in use too
    // (QSD 10.0 aborts on an assertion there).
    let exported =
        d.exports.uses_node(&a.node_name) || crate::bitmaps::exported_from(&d.blocks, &a.node_name);
    d.blocks.del(&a.node_name, exported)?;
    d.exports.forget_node(&a.node_name);
    d.stats.forget_node(&a.node_name);
    Ok(Value::Null)
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct QueryArgs {
    flat: Option<bool>,
}

/// `query-named-block-nodes` (`flat` accepted: we have no backing chains).
pub(super) fn query_named_block_nodes(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let q: QueryArgs = from_args(args)?;
    let _ = q.flat;
    Ok(d.blocks.query())
}
