//! qcow2 nodes in the graph: resolving `file` and `backing` (opening the
//! backing file an image names, read-only, as QEMU does), and the image
//! information `query-named-block-nodes` shows for them.

use std::path::Path;
use std::sync::Arc;

use engine::block::{qcow2, BlockNode, NodeOptions, Qcow2Options};
use serde_json::{json, Map, Value};

use super::{BlockGraph, NodeEntry, Refs};
use crate::error::{ControlError, Result};
use crate::qapi::{BackingChoice, BlockdevOptions, BlockdevRef, Input, Qcow2DriverOptions, Syntax};

/// Nodes a new node uses and owns, as [`BlockGraph`] records them.
pub(super) struct Links<'a> {
    pub(super) created: &'a mut Vec<String>,
    pub(super) children: &'a mut Vec<String>,
    pub(super) owned: &'a mut Vec<String>,
    pub(super) refs: Refs<'a>,
}

impl BlockGraph {
    /// A child given by name or inline.
    pub(super) fn resolve_ref(
        &mut self,
        r: &BlockdevRef,
        links: &mut Links<'_>,
    ) -> Result<Arc<BlockNode>> {
        match r {
            BlockdevRef::Reference(c) => match self.nodes.get(c) {
                Some(e) => {
                    links.children.push(c.clone());
                    Ok(e.node.clone())
                }
                None => Err(ControlError::failed(format!(
                    "Cannot find device='{c}' nor node-name='{c}'"
                ))),
            },
            BlockdevRef::Definition(def) => {
                let node = self.open(super::inline_child(def), false, links.created, links.refs)?;
                links.children.push(node.name().to_string());
                links.owned.push(node.name().to_string());
                Ok(node)
            }
        }
    }

    /// The engine options and `json:{}` form of a `qcow2` node.
    pub(super) fn qcow2_options(
        &mut self,
        q: &Qcow2DriverOptions,
        read_only: bool,
        links: &mut Links<'_>,
    ) -> Result<(NodeOptions, Value)> {
        let file = self.resolve_ref(&q.file, links)?;
        let file_json = self.json_of(&file);
        let mut j = json!({"driver": "qcow2", "file": file_json});
        let backing = match &q.backing {
            BackingChoice::None => {
                j["backing"] = Value::Null;
                None
            }
            BackingChoice::Node(r) => {
                let b = self.resolve_ref(r, links).map_err(|e| {
                    ControlError::failed(format!("Could not open backing file: {e}"))
                })?;
                j["backing"] = self.json_of(&b);
                Some(b)
            }
            BackingChoice::FromImage => self.open_image_backing(&file, links)?,
        };
        Ok((
            NodeOptions::Qcow2(Qcow2Options {
                file,
                backing,
                read_only,
            }),
            j,
        ))
    }

    fn json_of(&self, node: &BlockNode) -> Value {
        self.nodes
            .get(node.name())
            .map(|e| e.json.clone())
            .unwrap_or(Value::Null)
    }

    /// Opens the backing file named in the image in `file`, read-only,
    /// with the format the image names (probed when it names none).
    fn open_image_backing(
        &mut self,
        file: &Arc<BlockNode>,
        links: &mut Links<'_>,
    ) -> Result<Option<Arc<BlockNode>>> {
        let header = qcow2::probe(file)?;
        let Some(name) = header.backing_file else {
            return Ok(None);
        };
        let fail =
            |e: ControlError| ControlError::failed(format!("Could not open backing file: {e}"));
        let path = full_backing_name(file.filename(), &name).ok_or_else(|| {
            ControlError::failed(format!(
                "Cannot use relative backing file names for 'json:{}'",
                self.json_of(file)
            ))
        })?;
        let mut file_opts = Map::new();
        file_opts.insert("driver".into(), json!("file"));
        file_opts.insert("filename".into(), json!(path));
        file_opts.insert("read-only".into(), json!(true));
        let format = match header.backing_format {
            Some(f) => f,
            None => {
                // Probe: qcow2 by its magic, anything else is raw.
                let opts = BlockdevOptions::parse(Input::new(file_opts.clone(), Syntax::Json))?;
                let probe = self
                    .open(opts, false, links.created, links.refs)
                    .map_err(fail)?;
                let fmt = if qcow2::is_qcow2(&probe) {
                    "qcow2"
                } else {
                    "raw"
                };
                let name = probe.name().to_string();
                drop(probe);
                self.nodes.remove(&name);
                links.created.retain(|n| *n != name);
                fmt.to_string()
            }
        };
        let mut opts = Map::new();
        opts.insert("driver".into(), json!(format));
        opts.insert("read-only".into(), json!(true));
        opts.insert("file".into(), Value::Object(file_opts));
        let opts =
            BlockdevOptions::parse(Input::new(opts, Syntax::Json)).map_err(|e| fail(e.into()))?;
        let node = self
            .open(opts, false, links.created, links.refs)
            .map_err(fail)?;
        links.children.push(node.name().to_string());
        links.owned.push(node.name().to_string());
        Ok(Some(node))
    }

    /// Adds what QEMU shows of a qcow2 image to `image` (its
    /// `ImageInfo`); returns the node-level `backing_file`, if any.
    pub(super) fn qcow2_image_info(&self, e: &NodeEntry, image: &mut Value) -> Option<String> {
        let info = e.node.qcow2_info()?;
        image["cluster-size"] = json!(info.cluster_size);
        image["dirty-flag"] = json!(false);
        image["format-specific"] = json!({
            "type": "qcow2",
            "data": {
                "compat": info.compat,
                "compression-type": "zlib",
                "lazy-refcounts": info.lazy_refcounts,
                "refcount-bits": info.refcount_bits,
                "corrupt": info.corrupt,
                "extended-l2": false,
            }
        });
        if let Some(b) = &info.backing_file {
            image["backing-filename"] = json!(b);
            let full = full_backing_name(e.node.child().and_then(|c| c.filename()), b);
            image["full-backing-filename"] = json!(full.unwrap_or_else(|| b.clone()));
        }
        if let Some(f) = &info.backing_format {
            image["backing-filename-format"] = json!(f);
        }
        let backing = e.node.backing()?;
        let entry = self.nodes.get(backing.name())?;
        let binfo = self.info(backing.name(), entry);
        image["backing-image"] = binfo["image"].clone();
        binfo["file"].as_str().map(str::to_string)
    }

    /// How many backing files lie below `node`.
    pub(super) fn backing_depth(node: &BlockNode) -> u64 {
        let mut depth = 0;
        let mut n = node.backing();
        while let Some(b) = n {
            depth += 1;
            n = b.backing().or_else(|| b.child().and_then(|c| c.backing()));
        }
        depth
    }
}

/// QEMU's `path_combine`: a relative backing file name is relative to the
/// directory of the image that names it.
fn full_backing_name(image: Option<&str>, backing: &str) -> Option<String> {
    if backing.starts_with('/') {
        return Some(backing.to_string());
    }
    let image = image?;
    Some(match Path::new(image).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            dir.join(backing).to_string_lossy().into_owned()
        }
        _ => backing.to_string(),
    })
}
