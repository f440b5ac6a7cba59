//! Work sources an iothread looks at in user space while it spins (QEMU's
//! `io_poll` handlers).
//!
//! A virtqueue's avail ring is memory the driver writes: a spinning
//! iothread can see a new request there directly, so while it spins the
//! queue keeps the driver's notifications off, and the driver submits
//! without a kick (an eventfd write and a wake-up of our ring's poll per
//! batch, on both sides). Before the thread parks, every source turns its
//! notifications back on and looks once more, so no request is left
//! waiting for a kick that was never sent.
//!
//! Sources register a `Weak`: one that went away is dropped from the list
//! at the next look, and a source never outlives what it polls.

use std::rc::Weak;

use super::runtime::with_runtime;

/// A source of work a spinning iothread polls. Both calls run on the
/// iothread, between tasks; either may start work (spawn tasks).
pub trait Poller {
    /// Looks for work and starts it; the source may keep its
    /// notifications off from here until [`Poller::poll_end`]. Returns
    /// true when it found work.
    fn poll(&self) -> bool;

    /// The thread is about to park: turn notifications back on, and start
    /// what arrived in between. Returns true when it found work (the
    /// thread then does not park).
    fn poll_end(&self) -> bool;
}

/// Adds `p` to the sources the current iothread polls while it spins,
/// until `p`'s last `Rc` goes.
///
/// # Panics
///
/// Off an iothread (see `runtime`).
pub fn register_poller(p: Weak<dyn Poller>) {
    with_runtime(|rt| rt.pollers.add(p));
}

/// The sources of one iothread.
#[derive(Default)]
pub(crate) struct Pollers {
    list: std::cell::RefCell<Vec<Weak<dyn Poller>>>,
}

impl Pollers {
    fn add(&self, p: Weak<dyn Poller>) {
        self.list.borrow_mut().push(p);
    }

    /// Calls `poll` (or `poll_end` when `end`) on every live source;
    /// true when one found work.
    pub(crate) fn run(&self, end: bool) -> bool {
        // Taken out, so a source may register another while it runs.
        let mut list = std::mem::take(&mut *self.list.borrow_mut());
        if list.is_empty() {
            return false;
        }
        let mut found = false;
        list.retain(|w| match w.upgrade() {
            Some(p) => {
                found |= if end { p.poll_end() } else { p.poll() };
                true
            }
            None => false,
        });
        let mut slot = self.list.borrow_mut();
        list.append(&mut slot);
        *slot = list;
        found
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Finds work on its `work`th poll; counts the calls.
    #[derive(Default)]
    struct Source {
        polls: Cell<u32>,
        ends: Cell<u32>,
        work: u32,
        end_finds: bool,
    }

    impl Poller for Source {
        fn poll(&self) -> bool {
            self.polls.set(self.polls.get() + 1);
            self.polls.get() == self.work
        }
        fn poll_end(&self) -> bool {
            self.ends.set(self.ends.get() + 1);
            self.end_finds
        }
    }

    #[test]
    fn polls_live_sources_and_drops_gone_ones() {
        let ps = Pollers::default();
        assert!(!ps.run(false), "no sources, no work");
        let a = Rc::new(Source {
            work: 2,
            ..Source::default()
        });
        let b = Rc::new(Source {
            end_finds: true,
            ..Source::default()
        });
        ps.add(Rc::downgrade(&a) as Weak<dyn Poller>);
        ps.add(Rc::downgrade(&b) as Weak<dyn Poller>);
        assert!(!ps.run(false));
        assert!(ps.run(false), "a finds work on its second poll");
        assert_eq!((a.polls.get(), b.polls.get()), (2, 2));
        assert!(ps.run(true), "b found work when notifications came back");
        assert_eq!((a.ends.get(), b.ends.get()), (1, 1));
        drop(b);
        assert!(!ps.run(true), "b is gone");
        assert_eq!(ps.list.borrow().len(), 1);
        assert_eq!(a.ends.get(), 2);
    }

    /// Registers another source from inside its own poll.
    struct Spawner {
        ps: Rc<Pollers>,
        child: Rc<Source>,
    }

    impl Poller for Spawner {
        fn poll(&self) -> bool {
            self.ps.add(Rc::downgrade(&self.child) as Weak<dyn Poller>);
            false
        }
        fn poll_end(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_source_may_register_another_while_polled() {
        let ps = Rc::new(Pollers::default());
        let child = Rc::new(Source::default());
        let s = Rc::new(Spawner {
            ps: ps.clone(),
            child: child.clone(),
        });
        ps.add(Rc::downgrade(&s) as Weak<dyn Poller>);
        ps.run(false);
        assert_eq!(ps.list.borrow().len(), 2, "the new source was kept");
        ps.run(false);
        assert_eq!(child.polls.get(), 1, "and is polled from the next look on");
    }
}
