//! Long write transactions give their core back now and then.
//!
//! The log writer runs on the core the request worker runs on (one worker, pinned, as in the
//! bench). A batch of a thousand records is milliseconds of work; run in one go, it holds up
//! every request the worker has in flight for that long, which is most of the added p99 at
//! c=32. Inside [`paced`], [`pace`] rests the thread once it has run for a slice, so the
//! worker has the core between slices; the batch, its transaction and its commit are the same.
//! A bare `sched_yield` is not enough: the scheduler (EEVDF) hands the core straight back to a
//! writer that slept through its batch window, so the rest is a short sleep.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a paced thread runs before it rests. Shorter slices cut the p99 further but cost
/// the writer CPU (its working set leaves the cache at each switch): at 200 µs the writer took
/// ~1 µs more a logged request at c=32, at 1 ms no more than unpaced (three runs each).
pub const SLICE: Duration = Duration::from_millis(1);

thread_local! {
    /// When the paced thread last started running, and how long it rests (`None`: not paced).
    static PACE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    /// How often this thread rested (for the tests).
    static RESTS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with [`pace`] resting `rest` on this thread after each slice (zero: a yield only).
pub fn paced<T>(rest: Duration, f: impl FnOnce() -> T) -> T {
    /// Puts the thread's pacing back as it was, even when `f` panics (redb can, on a damaged
    /// page, and the log writer catches it and goes on).
    struct Restore(Option<(Instant, Duration)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PACE.set(self.0);
        }
    }
    let _restore = Restore(PACE.replace(Some((Instant::now(), rest))));
    f()
}

/// Inside [`paced`]: rests the thread when it has run for a slice since it last rested.
/// Anywhere else it does nothing (the same store code runs on the control plane's threads).
pub fn pace() {
    rest_once(|ran| ran >= SLICE);
}

/// Inside [`paced`]: rests the thread before work that cannot be paced from within, unless its
/// slice has only just begun. redb's commit (its page writes and `fdatasync`) runs about a
/// millisecond for a batch of a thousand logged records; begun at the end of a slice, it kept
/// the worker off the core for two slices' time in one go.
pub fn before_unpaced() {
    rest_once(worth_a_rest);
}

/// Inside [`paced`]: rests the thread when its slice has run for long enough by `due`, and starts
/// a new slice.
fn rest_once(due: impl Fn(Duration) -> bool) {
    PACE.with(|pace| {
        if let Some((at, rest)) = pace.get()
            && due(at.elapsed())
        {
            if rest.is_zero() {
                std::thread::yield_now();
            } else {
                std::thread::sleep(rest);
            }
            RESTS.set(RESTS.get() + 1);
            pace.set(Some((Instant::now(), rest)));
        }
    });
}

/// Whether a slice that has run this long rests before unpaced work: not when it has just begun
/// (after a rest, or a batch's first record), so a short batch is not held up for nothing.
fn worth_a_rest(ran: Duration) -> bool {
    ran >= SLICE / 8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that runs for several slices rests between them, inside `paced` only.
    #[test]
    fn paced_work_rests_between_slices() {
        let spin = |slices: u32| {
            let until = Instant::now() + SLICE * slices;
            while Instant::now() < until {
                pace();
            }
        };
        let before = RESTS.get();
        spin(3);
        assert_eq!(RESTS.get(), before, "not paced: no rest");
        paced(Duration::ZERO, || spin(5));
        let yielded = RESTS.get() - before;
        assert!((1..=5).contains(&yielded), "{yielded} yields over five slices");
        // With a rest: the call after a slice's work sleeps for it.
        let slept = paced(SLICE * 2, || {
            let until = Instant::now() + SLICE;
            while Instant::now() < until {}
            let at = Instant::now();
            pace();
            at.elapsed()
        });
        assert!(slept >= SLICE * 2, "rested {slept:?}");
        assert_eq!(RESTS.get() - before, yielded + 1);
        spin(3);
        assert_eq!(RESTS.get() - before, yielded + 1, "pacing ends with `paced`");
        // Before unpaced work: a rest once an eighth of the slice has run, none outside `paced`.
        assert!(!worth_a_rest(Duration::ZERO) && !worth_a_rest(SLICE / 10) && worth_a_rest(SLICE / 8));
        let rests = || RESTS.get() - before;
        let counted = rests();
        before_unpaced();
        assert_eq!(rests(), counted, "not paced: no rest before unpaced work");
        paced(Duration::ZERO, || {
            let until = Instant::now() + SLICE / 4;
            while Instant::now() < until {}
            before_unpaced();
        });
        assert_eq!(rests(), counted + 1, "a slice a quarter run rests first");
        // A panic inside ends it too.
        let caught = std::panic::catch_unwind(|| paced(Duration::ZERO, || panic!("a damaged page")));
        assert!(caught.is_err());
        spin(3);
        assert_eq!(RESTS.get() - before, yielded + 2, "pacing ends when `paced` unwinds");
    }
}
