//! `block-dirty-bitmap-add`, `-remove`, `-clear`, `-enable`, `-disable`,
//! `-merge` and `transaction`; the work is in `crate::bitmaps`.

use serde_json::{Map, Value};

use crate::bitmaps;
use crate::daemon::Daemon;
use crate::error::Result;
use crate::qapi::{
    BitmapAction, BitmapAddArgs, BitmapArgs, BitmapMergeArgs, Input, Syntax, TransactionArgs,
};

fn one(d: &mut Daemon, action: BitmapAction) -> Result<Value> {
    bitmaps::transaction(&d.blocks, &[action], false)?;
    Ok(Value::Null)
}

fn input(args: Map<String, Value>) -> Input {
    Input::new(args, Syntax::Json)
}

pub(super) fn add(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    one(d, BitmapAction::Add(BitmapAddArgs::parse(input(args))?))
}

pub(super) fn remove(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BitmapArgs = input(args).parse()?;
    one(d, BitmapAction::Remove(a))
}

pub(super) fn clear(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BitmapArgs = input(args).parse()?;
    one(d, BitmapAction::Clear(a))
}

pub(super) fn enable(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BitmapArgs = input(args).parse()?;
    one(d, BitmapAction::Enable(a))
}

pub(super) fn disable(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: BitmapArgs = input(args).parse()?;
    one(d, BitmapAction::Disable(a))
}

pub(super) fn merge(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    one(d, BitmapAction::Merge(BitmapMergeArgs::parse(input(args))?))
}

/// `transaction`: every action checked before any is done.
pub(super) fn transaction(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let t = TransactionArgs::parse(input(args))?;
    bitmaps::transaction(&d.blocks, &t.actions, t.grouped)?;
    Ok(Value::Null)
}
