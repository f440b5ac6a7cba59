//! Which CPU an iothread runs on.
//!
//! An iothread created with `cpu=N` is pinned to CPU N, which must be in
//! the process's allowed set (`taskset`, cgroups). One created without
//! `cpu` gets the next CPU of the allowed set, round robin in CPU order,
//! counting every iothread placed this way (the built-in default iothread
//! included): with CPUs {2,3} the default iothread goes on 2, the next one
//! on 3, the next on 2 again. Explicit pins do not move the cursor, so
//! they do not disturb the rotation of the others.
//!
//! Placement never leaves a thread unpinned: with an empty allowed set
//! (which the kernel does not allow) it falls back to CPU 0.

/// Why a CPU cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The CPU is outside the allowed set.
    #[error("CPU {cpu} is not available to this process (allowed: {allowed})")]
    NotAllowed {
        /// The CPU asked for.
        cpu: usize,
        /// The allowed set, e.g. `0-3`.
        allowed: String,
    },
}

/// The placement state: the allowed CPUs and the round-robin cursor.
#[derive(Debug, Clone)]
pub struct Placement {
    allowed: Vec<usize>,
    next: usize,
}

impl Placement {
    /// Placement over the CPUs this process may run on.
    pub fn from_affinity() -> Placement {
        Placement::new(engine::iothread::allowed_cpus())
    }

    /// Placement over `allowed` (sorted, deduplicated here).
    pub fn new(mut allowed: Vec<usize>) -> Placement {
        allowed.sort_unstable();
        allowed.dedup();
        if allowed.is_empty() {
            allowed.push(0);
        }
        Placement { allowed, next: 0 }
    }

    /// The CPU for a new iothread: `requested` if allowed, else the next
    /// one round robin.
    pub fn place(&mut self, requested: Option<usize>) -> Result<usize, PlacementError> {
        match requested {
            Some(cpu) if self.allowed.contains(&cpu) => Ok(cpu),
            Some(cpu) => Err(PlacementError::NotAllowed {
                cpu,
                allowed: format_cpus(&self.allowed),
            }),
            None => {
                let cpu = self.allowed[self.next % self.allowed.len()];
                self.next = (self.next + 1) % self.allowed.len();
                Ok(cpu)
            }
        }
    }

    /// The allowed CPUs.
    pub fn allowed(&self) -> &[usize] {
        &self.allowed
    }
}

/// `0-3,6` style list.
fn format_cpus(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_over_allowed() {
        let mut p = Placement::new(vec![3, 2]);
        assert_eq!(p.place(None), Ok(2));
        assert_eq!(p.place(None), Ok(3));
        assert_eq!(p.place(None), Ok(2));
    }

    #[test]
    fn explicit_pin_does_not_move_cursor() {
        let mut p = Placement::new(vec![0, 1, 2]);
        assert_eq!(p.place(None), Ok(0));
        assert_eq!(p.place(Some(2)), Ok(2));
        assert_eq!(p.place(None), Ok(1));
    }

    #[test]
    fn pin_outside_allowed_set_fails() {
        let mut p = Placement::new(vec![0, 1, 2, 5]);
        let e = p.place(Some(4)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CPU 4 is not available to this process (allowed: 0-2,5)"
        );
    }

    #[test]
    fn empty_set_falls_back_to_cpu0() {
        let mut p = Placement::new(vec![]);
        assert_eq!(p.place(None), Ok(0));
        assert_eq!(p.allowed(), &[0]);
    }
}
