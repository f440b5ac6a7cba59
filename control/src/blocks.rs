//! The block graph as the control plane keeps it: nodes by name, who owns
//! them (the monitor, or a parent that created them inline), and what
//! `query-named-block-nodes` reports about them.
//!
//! A node given inline (`"file": {...}` of a `raw` node) belongs to its
//! parent: it cannot be deleted on its own and goes away with the parent,
//! as in QEMU. Inline nodes without a `node-name` get QEMU-style
//! generated names (`#block123`).

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::block::{
    BlockNode, FileOptions, NodeFlags, NodeOptions, NullOptions, RawOptions, RbdOptions,
};
use serde_json::{json, Value};

use crate::error::{ControlError, Result};
use crate::objects::Objects;
use crate::qapi::{
    is_identifier, BlockdevOptions, BlockdevRef, DetectZeroes, Discard, DriverOptions, OnOffAuto,
    RbdDriverOptions,
};
use crate::qmp::to_qemu_json;
use crate::secrets::Secrets;

mod nbd;
mod qcow2;

/// The objects a node's options may name (`key-secret`, `tls-creds`).
#[derive(Debug, Clone, Copy)]
pub struct Refs<'a> {
    pub secrets: &'a Secrets,
    pub objects: &'a Objects,
}

/// What the control plane remembers about a node.
#[derive(Debug)]
pub struct NodeEntry {
    pub node: Arc<BlockNode>,
    /// Added by `blockdev-add` itself (not inline in a parent).
    pub monitor_owned: bool,
    /// Nodes it uses (by name).
    pub children: Vec<String>,
    /// Nodes created inline for it, deleted with it.
    pub owned_children: Vec<String>,
    pub detect_zeroes: DetectZeroes,
    pub no_flush: bool,
    /// The options as QEMU would print them in `json:{...}` file names.
    pub json: Value,
    /// Creation order, for QEMU's newest-first listing.
    seq: u64,
}

/// All nodes, by name.
#[derive(Debug, Default)]
pub struct BlockGraph {
    nodes: BTreeMap<String, NodeEntry>,
    next_auto: u64,
    next_seq: u64,
}

impl BlockGraph {
    /// A node by name.
    pub fn get(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.get(name)
    }

    /// `blockdev-add`.
    pub fn add(&mut self, opts: BlockdevOptions, refs: Refs<'_>) -> Result<Arc<BlockNode>> {
        if opts.base.node_name.is_none() {
            return Err(ControlError::failed(
                "'node-name' must be specified for the root node",
            ));
        }
        let mut created = Vec::new();
        match self.open(opts, true, &mut created, refs) {
            Ok(node) => Ok(node),
            Err(e) => {
                // Undo inline children opened before the failure.
                for name in created {
                    self.nodes.remove(&name);
                }
                Err(e)
            }
        }
    }

    fn open(
        &mut self,
        opts: BlockdevOptions,
        monitor_owned: bool,
        created: &mut Vec<String>,
        refs: Refs<'_>,
    ) -> Result<Arc<BlockNode>> {
        let name = match &opts.base.node_name {
            Some(n) => {
                if !is_identifier(n) {
                    return Err(ControlError::failed(format!("Invalid node-name: '{n}'")));
                }
                if self.nodes.contains_key(n) {
                    return Err(ControlError::failed(format!(
                        "Duplicate nodes with node-name='{n}'"
                    )));
                }
                n.clone()
            }
            None => self.auto_name(),
        };
        let read_only = opts.base.read_only.unwrap_or(false);
        let unmap = opts.base.discard == Some(Discard::Unmap);
        if opts.base.detect_zeroes == Some(DetectZeroes::Unmap) && !unmap {
            return Err(ControlError::failed(
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap",
            ));
        }
        let direct = opts.cache.direct.unwrap_or(false);
        let no_flush = opts.cache.no_flush.unwrap_or(false);
        let mut children = Vec::new();
        let mut owned_children = Vec::new();
        let (options, json) = match &opts.options {
            DriverOptions::File(f) | DriverOptions::HostDevice(f) => (
                NodeOptions::File(FileOptions {
                    filename: f.filename.clone(),
                    direct,
                    no_flush,
                    read_only,
                    // `auto` means on for us: the engine's OFD locks always work.
                    locking: f.locking != Some(OnOffAuto::Off),
                    host_device: opts.driver == "host_device",
                }),
                json!({"driver": opts.driver, "filename": f.filename}),
            ),
            DriverOptions::Null(n) => {
                // QEMU's null driver defaults to 1 GiB.
                let size = n.size.unwrap_or(1 << 30);
                (
                    NodeOptions::Null(NullOptions {
                        size,
                        read_zeroes: n.read_zeroes.unwrap_or(false),
                    }),
                    json!({"driver": opts.driver, "size": size}),
                )
            }
            DriverOptions::Raw(r) => {
                let child = match &r.file {
                    BlockdevRef::Reference(c) => match self.nodes.get(c) {
                        Some(e) => {
                            children.push(c.clone());
                            e.node.clone()
                        }
                        None => {
                            return Err(ControlError::failed(format!(
                                "Cannot find device='{c}' nor node-name='{c}'"
                            )))
                        }
                    },
                    BlockdevRef::Definition(def) => {
                        let def = inline_child(def);
                        let node = self.open(def, false, created, refs)?;
                        children.push(node.name().to_string());
                        owned_children.push(node.name().to_string());
                        node
                    }
                };
                let child_json = self
                    .nodes
                    .get(child.name())
                    .map(|e| e.json.clone())
                    .unwrap_or(Value::Null);
                let mut j = json!({"driver": "raw", "file": child_json});
                if let Some(o) = r.offset {
                    j["offset"] = json!(o);
                }
                if let Some(s) = r.size {
                    j["size"] = json!(s);
                }
                (
                    NodeOptions::Raw(RawOptions {
                        child,
                        offset: r.offset.unwrap_or(0),
                        size: r.size,
                    }),
                    j,
                )
            }
            DriverOptions::Rbd(r) => {
                if r.snapshot.is_some() && !read_only && opts.base.auto_read_only != Some(true) {
                    return Err(ControlError::failed("rbd snapshots are read-only"));
                }
                (
                    NodeOptions::Rbd(rbd_options(r, read_only, direct, refs.secrets)?),
                    rbd_json(r),
                )
            }
            DriverOptions::Nbd(n) => (
                nbd::node(n, read_only, opts.base.auto_read_only == Some(true), refs)?,
                nbd::json(n),
            ),
            DriverOptions::Qcow2(q) => {
                let mut links = qcow2::Links {
                    created,
                    children: &mut children,
                    owned: &mut owned_children,
                    refs,
                };
                self.qcow2_options(q, read_only, &mut links)?
            }
        };
        let node = BlockNode::open_with(&name, opts.driver, options, NodeFlags { unmap })?;
        self.next_seq += 1;
        self.nodes.insert(
            name.clone(),
            NodeEntry {
                node: node.clone(),
                monitor_owned,
                children,
                owned_children,
                detect_zeroes: opts.base.detect_zeroes.unwrap_or_default(),
                no_flush,
                json,
                seq: self.next_seq,
            },
        );
        created.push(name);
        Ok(node)
    }

    fn auto_name(&mut self) -> String {
        loop {
            self.next_auto += 1;
            let n = format!("#block{:03}", self.next_auto);
            if !self.nodes.contains_key(&n) {
                return n;
            }
        }
    }

    /// Whether another node uses `name` as a child.
    fn has_parent(&self, name: &str) -> bool {
        self.nodes
            .values()
            .any(|e| e.children.iter().any(|c| c == name))
    }

    /// `blockdev-del`; `exported` says whether an export uses the node.
    pub fn del(&mut self, name: &str, exported: bool) -> Result<()> {
        let Some(entry) = self.nodes.get(name) else {
            return Err(ControlError::failed(format!(
                "Failed to find node with node-name='{name}'"
            )));
        };
        if !entry.monitor_owned {
            return Err(ControlError::failed(format!(
                "Node {name} is not owned by the monitor"
            )));
        }
        if self.has_parent(name) {
            return Err(ControlError::failed(format!(
                "Block device {name} is in use"
            )));
        }
        if exported || entry.node.users() > 0 {
            return Err(ControlError::failed(format!("Node {name} is in use")));
        }
        self.remove_tree(name);
        Ok(())
    }

    fn remove_tree(&mut self, name: &str) {
        if let Some(e) = self.nodes.remove(name) {
            for c in e.owned_children {
                self.remove_tree(&c);
            }
        }
    }

    /// Node names, oldest first (QEMU's order for `query-blockstats`).
    pub fn names_by_age(&self) -> Vec<&str> {
        let mut list: Vec<(&String, &NodeEntry)> = self.nodes.iter().collect();
        list.sort_by_key(|(_, e)| e.seq);
        list.into_iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Removes every node (at exit), parents first.
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    /// `query-named-block-nodes`: QEMU's `BlockDeviceInfo` list, newest
    /// first like QEMU.
    pub fn query(&self) -> Value {
        let mut list: Vec<(&String, &NodeEntry)> = self.nodes.iter().collect();
        list.sort_by_key(|(_, e)| std::cmp::Reverse(e.seq));
        Value::Array(list.into_iter().map(|(n, e)| self.info(n, e)).collect())
    }

    fn info(&self, name: &str, e: &NodeEntry) -> Value {
        let node = &e.node;
        // A protocol node shows its file name; a format node over a plain
        // child shows the child's; anything else shows `json:{...}`.
        let file = match (node.filename(), e.json.get("offset"), e.json.get("size")) {
            (Some(f), _, _) => f.to_string(),
            (None, _, _) if node.driver() == "nbd" => node.remote_name().unwrap_or_default(),
            (None, None, None)
                if node.driver() == "raw"
                    || (node.driver() == "qcow2" && e.json.get("backing").is_none()) =>
            {
                node.child()
                    .and_then(|c| c.filename())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("json:{}", to_qemu_json(&e.json, false)))
            }
            _ => format!("json:{}", to_qemu_json(&e.json, false)),
        };
        let actual_size = node
            .filename()
            .or_else(|| node.child().and_then(|c| c.filename()))
            .and_then(|f| std::fs::metadata(f).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            })
            .unwrap_or(0);
        let format = node.driver();
        let mut image = json!({
            "filename": file,
            "format": format,
            "virtual-size": node.size(),
            "actual-size": actual_size,
        });
        if node.filename().is_some() {
            image["dirty-flag"] = json!(false);
            image["format-specific"] = json!({"type": "file", "data": {}});
        } else if node.driver() == "raw" {
            image["dirty-flag"] = json!(false);
        }
        let backing_file = self.qcow2_image_info(e, &mut image);
        let mut info = json!({
            "node-name": name,
            "drv": node.driver(),
            "file": file,
            "ro": node.read_only(),
            "encrypted": false,
            "active": true,
            "detect_zeroes": e.detect_zeroes.as_str(),
            "backing_file_depth": Self::backing_depth(node),
            "image": image,
            "cache": {
                "writeback": true,
                "direct": node.direct(),
                "no-flush": e.no_flush,
            },
            "bps": 0, "bps_rd": 0, "bps_wr": 0,
            "iops": 0, "iops_rd": 0, "iops_wr": 0,
            "write_threshold": 0,
        });
        if let Some(b) = backing_file {
            info["backing_file"] = json!(b);
        }
        if let Some(b) = crate::bitmaps::query(node) {
            info["dirty-bitmaps"] = b;
        }
        info
    }
}

fn rbd_options(
    r: &RbdDriverOptions,
    read_only: bool,
    direct: bool,
    secrets: &Secrets,
) -> Result<RbdOptions> {
    let key = r
        .key_secret
        .as_deref()
        .map(|id| secrets.lookup_base64(id))
        .transpose()?;
    Ok(RbdOptions {
        pool: r.pool.clone(),
        namespace: r.namespace.clone(),
        image: r.image.clone(),
        conf: r.conf.clone(),
        snapshot: r.snapshot.clone(),
        user: r.user.clone(),
        auth_client_required: r
            .auth_client_required
            .iter()
            .flatten()
            .map(|m| m.as_str().to_string())
            .collect(),
        key,
        servers: r
            .server
            .iter()
            .flatten()
            .map(|s| (s.host.clone(), s.port.clone()))
            .collect(),
        read_only: read_only || r.snapshot.is_some(),
        cache: !direct,
    })
}

/// The options QEMU prints in an rbd node's `json:{...}` name (never the key).
fn rbd_json(r: &RbdDriverOptions) -> Value {
    let mut j = json!({"driver": "rbd", "pool": r.pool, "image": r.image});
    for (k, v) in [
        ("namespace", &r.namespace),
        ("snapshot", &r.snapshot),
        ("conf", &r.conf),
        ("user", &r.user),
        ("key-secret", &r.key_secret),
    ] {
        if let Some(v) = v {
            j[k] = json!(v);
        }
    }
    j
}

/// An inline child's options: as in QEMU (`bdrv_inherited_options`), a
/// child opened from its parent's options defaults to `discard=unmap`, the
/// parent's own `discard` deciding what reaches it.
pub(super) fn inline_child(def: &BlockdevOptions) -> BlockdevOptions {
    let mut def = def.clone();
    if def.base.discard.is_none() {
        def.base.discard = Some(Discard::Unmap);
    }
    def
}
