//! `query-blockstats` and `x-query-export-stats`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::daemon::Daemon;
use crate::error::Result;
use crate::qapi::from_args;
use crate::stats::{blockstats, export_stats};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct BlockstatsArgs {
    query_nodes: Option<bool>,
}

/// `query-blockstats` (see `stats::blockstats`).
pub(super) fn query_blockstats(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BlockstatsArgs = from_args(args)?;
    Ok(blockstats::query(d, a.query_nodes.unwrap_or(false)))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ExportStatsArgs {
    id: Option<String>,
    reset: Option<bool>,
}

/// `x-query-export-stats` (see `stats::export_stats`).
pub(super) fn x_query_export_stats(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: ExportStatsArgs = from_args(args)?;
    export_stats::query(d, a.id.as_deref(), a.reset.unwrap_or(false))
}
