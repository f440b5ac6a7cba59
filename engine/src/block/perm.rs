//! Permissions on a node, as QEMU's block layer has them.
//!
//! A user of a node (an export, a parent node) asks for the permissions it
//! needs (`perm`) and says which ones it lets others have (`shared`). Two
//! users conflict when one needs what the other does not share. The union
//! over all users is what the `file` driver turns into OFD lock bytes (see
//! [`super::lock`]), so that other processes, QEMU among them, see it too.

use std::sync::Mutex;

use super::error::{BlockError, BlockResult};

/// A set of permissions (QEMU's `BLK_PERM_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perm(pub u8);

impl Perm {
    /// Read with a consistent view of the data.
    pub const CONSISTENT_READ: Perm = Perm(0x01);
    /// Change the data.
    pub const WRITE: Perm = Perm(0x02);
    /// Write data that is already there (no visible change).
    pub const WRITE_UNCHANGED: Perm = Perm(0x04);
    /// Change the size.
    pub const RESIZE: Perm = Perm(0x08);
    /// Every permission.
    pub const ALL: Perm = Perm(0x0f);
    /// No permission.
    pub const NONE: Perm = Perm(0);

    /// Union.
    pub const fn union(self, o: Perm) -> Perm {
        Perm(self.0 | o.0)
    }
    /// True when every bit of `o` is in `self`.
    pub const fn contains(self, o: Perm) -> bool {
        self.0 & o.0 == o.0
    }
    /// The bits of `self` not in `o`.
    pub const fn minus(self, o: Perm) -> Perm {
        Perm(self.0 & !o.0)
    }
    /// QEMU's name of the lowest permission bit set.
    pub fn name(self) -> &'static str {
        match self.0 {
            b if b & 0x01 != 0 => "consistent read",
            b if b & 0x02 != 0 => "write",
            b if b & 0x04 != 0 => "write unchanged",
            b if b & 0x08 != 0 => "resize",
            _ => "none",
        }
    }
}

#[derive(Debug, Clone)]
struct Holder {
    id: u64,
    name: String,
    perm: Perm,
    shared: Perm,
}

/// The users of one node and what they hold.
#[derive(Debug, Default)]
pub(crate) struct PermTable {
    holders: Mutex<Vec<Holder>>,
    next: std::sync::atomic::AtomicU64,
}

impl PermTable {
    /// Adds a user after checking it against the others; returns its id.
    pub(crate) fn add(&self, node: &str, name: &str, perm: Perm, shared: Perm) -> BlockResult<u64> {
        let mut h = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        for o in h.iter() {
            let bad = perm.minus(o.shared);
            if bad != Perm::NONE {
                return Err(BlockError::PermConflict {
                    holder: o.name.clone(),
                    perm: bad.name(),
                    node: node.into(),
                });
            }
            let bad = o.perm.minus(shared);
            if bad != Perm::NONE {
                return Err(BlockError::PermConflict {
                    holder: o.name.clone(),
                    perm: bad.name(),
                    node: node.into(),
                });
            }
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        h.push(Holder {
            id,
            name: name.into(),
            perm,
            shared,
        });
        Ok(id)
    }

    /// Removes a user.
    pub(crate) fn remove(&self, id: u64) {
        let mut h = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        h.retain(|x| x.id != id);
    }

    /// (union of perms, union of what is not shared) over all users.
    pub(crate) fn cumulative(&self) -> (Perm, Perm) {
        let h = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().fold((Perm::NONE, Perm::NONE), |(p, u), x| {
            (p.union(x.perm), u.union(Perm::ALL.minus(x.shared)))
        })
    }

    /// Number of users.
    pub(crate) fn users(&self) -> usize {
        self.holders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_both_ways() {
        let t = PermTable::default();
        let a = t
            .add(
                "n",
                "a",
                Perm::CONSISTENT_READ.union(Perm::WRITE),
                Perm::ALL,
            )
            .expect("a");
        // b does not share write, which a holds.
        assert!(t
            .add("n", "b", Perm::CONSISTENT_READ, Perm::CONSISTENT_READ)
            .is_err());
        let b = t
            .add("n", "b", Perm::CONSISTENT_READ, Perm::ALL)
            .expect("b");
        assert_eq!(t.cumulative(), (Perm(0x03), Perm::NONE));
        t.remove(a);
        t.remove(b);
        assert_eq!(t.users(), 0);
    }
}
