//! Page-cache refaults from `/proc/vmstat`: file pages read back in after
//! the kernel evicted them. This machine kind runs a DAMON scheme that
//! pages out file pages it samples as cold (`action = pageout`, age ≥ 60
//! s, at most 128 MiB/s), and under 4k random reads a 4 GiB image looks
//! cold to its sampling, so a page-cache row can end up reading the disk.
//! The harness holds cached images mapped against it (`image::Resident`);
//! counted around each repeat, refaults show what still came back from the
//! disk (the counter is the whole machine's).

/// `workingset_refault_file` from the text of `/proc/vmstat`.
pub fn parse_refaults(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("workingset_refault_file "))
        .and_then(|v| v.trim().parse().ok())
}

/// The machine's file refaults so far (`None` when the kernel does not say).
pub fn file_refaults() -> Option<u64> {
    parse_refaults(&std::fs::read_to_string("/proc/vmstat").ok()?)
}

/// Refaults between two readings (`None` when either is unknown).
pub fn since(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_file_refault_counter() {
        let t = "workingset_refault_anon 7\nworkingset_refault_file 2320152\npgpgin 1\n";
        assert_eq!(parse_refaults(t), Some(2320152));
        assert_eq!(parse_refaults("pgpgin 1\n"), None);
        assert_eq!(since(Some(5), Some(9)), Some(4));
        assert_eq!(since(None, Some(9)), None);
    }
}
