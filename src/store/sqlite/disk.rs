//! Whether the calling thread has read from the disk since it last asked: what tells a look-up
//! that was slow because its pages were not in memory from one that was slow because the
//! thread was kept off the CPU (a busy machine), which needs no change of course.

use std::cell::Cell;

thread_local! {
    /// This thread's storage reads when it last asked; `None` before the first call.
    static SEEN: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Records this thread's storage reads so far, once per thread: the baseline for
/// [`read_since`]. Cheap after the first call.
pub(super) fn baseline() {
    SEEN.with(|seen| {
        if seen.get().is_none() {
            seen.set(storage_reads());
        }
    });
}

/// Whether this thread had bytes read from storage since the last call (or the baseline);
/// `true` when that cannot be known (no `/proc`), which errs towards not blocking.
pub(super) fn read_since() -> bool {
    let now = storage_reads();
    let before = SEEN.with(|seen| seen.replace(now));
    match (before, now) {
        (Some(before), Some(now)) => now > before,
        _ => true,
    }
}

/// The bytes the kernel fetched from storage for this thread (`read_bytes` of
/// `/proc/thread-self/io`: reads and page faults that missed the page cache).
fn storage_reads() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("read_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_reads_its_storage_counter() {
        assert!(storage_reads().is_some(), "Linux has /proc/thread-self/io");
    }

    #[test]
    fn no_read_since_the_baseline_is_no_disk_wait() {
        std::thread::spawn(|| {
            baseline();
            assert!(!read_since(), "nothing was read from storage in between");
        })
        .join()
        .expect("the thread ran");
    }
}
