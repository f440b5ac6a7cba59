//! A minimal slab: stable `usize` keys into a `Vec`, with a free list.
//!
//! Operation keys become io_uring `user_data`, so a key must stay valid until
//! its terminal completion; the slab never moves an entry to another key.

pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    len: usize,
}

enum Entry<T> {
    Used(T),
    Free,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.entries[key] = Entry::Used(value);
                key
            }
            None => {
                self.entries.push(Entry::Used(value));
                self.entries.len() - 1
            }
        }
    }

    /// The key the next `insert` returns.
    pub(crate) fn vacant_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Used(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let slot = self.entries.get_mut(key)?;
        match std::mem::replace(slot, Entry::Free) {
            Entry::Used(v) => {
                self.len -= 1;
                self.free.push(key);
                Some(v)
            }
            Entry::Free => None,
        }
    }

    /// Removes and returns every value.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len);
        for (key, slot) in self.entries.iter_mut().enumerate() {
            if let Entry::Used(v) = std::mem::replace(slot, Entry::Free) {
                out.push(v);
                self.free.push(key);
            }
        }
        self.len = 0;
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn keys_are_reused_and_stable() {
        let mut s = Slab::new();
        let a = s.insert(1);
        let b = s.insert(2);
        assert_eq!(s.remove(a), Some(1));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.vacant_key(), a);
        let c = s.insert(3);
        assert_eq!(c, a);
        assert_eq!(s.vacant_key(), 2);
        assert_eq!(s.get_mut(b).copied(), Some(2));
        assert_eq!(s.len(), 2);
    }
}
