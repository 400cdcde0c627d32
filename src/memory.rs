//! Memory the allocator keeps after a burst goes back to the system once the process is idle.
//!
//! The binary's allocator (mimalloc 3) hands a freed page back to the system a second after it
//! was freed, but only when some thread next allocates: its purge is not a timer. After a burst
//! of requests the worker and the log writer go quiet, nothing allocates, and the pages the
//! burst took (the log queue's records, the writer's batch buffers) stay resident for good:
//! measured through 400,000 logged requests, ~50 MiB that no wait brought back. Purging at every
//! free instead (a purge delay of zero) cost 12–16 % more CPU per request at c=32. So each
//! thread that works in bursts asks, once a second, whether it did anything since it last
//! looked, and the first time it did not, gives back what it keeps ([`IdleRelease`]).
//!
//! The library does not name the allocator: the binary registers how to give memory back
//! ([`set_release`]); without it (the tests' system allocator) nothing is done.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

/// How often a thread that works in bursts looks whether it has gone idle: it gives memory
/// back between one and two of these after its last piece of work.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How the allocator gives the calling thread's unused memory back (registered once).
static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how the allocator gives the calling thread's unused memory back to the system
/// (the binary, before it serves); a second call is ignored.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives the calling thread's unused memory back, if the binary said how.
fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}

/// One thread's idleness: fed its count of work done at each look ([`LOOK_EVERY`]), it gives
/// memory back once the count has stood still for a whole look, and not again until work is done.
#[derive(Debug, Default)]
pub struct IdleRelease {
    /// The count at the last look.
    seen: u64,
    /// Whether memory was given back since the count last moved.
    released: bool,
}

impl IdleRelease {
    /// A look with the thread's count of work done so far; whether memory was given back. (A
    /// long answer still streaming when the count stands still may meet the release, once: about
    /// a millisecond on the worker after a burst, nothing when little was freed.)
    pub fn look(&mut self, done: u64) -> bool {
        if done != self.seen {
            self.seen = done;
            self.released = false;
            return false;
        }
        if self.released {
            return false;
        }
        self.released = true;
        release();
        true
    }
}

thread_local! {
    /// Whether this thread has its looks running ([`look_on_this_worker`]).
    static LOOKING: Cell<bool> = const { Cell::new(false) };
}

/// On a request worker (from the app factory, which runs on each worker's thread): looks every
/// [`LOOK_EVERY`] whether requests came to this worker since the last look, and gives memory
/// back once none did. Started once per thread.
pub fn look_on_this_worker() {
    if LOOKING.replace(true) {
        return;
    }
    actix_web::rt::spawn(async {
        let mut idle = IdleRelease::default();
        let mut every = actix_web::rt::time::interval(LOOK_EVERY);
        loop {
            every.tick().await;
            idle.look(crate::store::pace::served_here());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static RELEASED: AtomicU64 = AtomicU64::new(0);

    fn count_release() {
        RELEASED.fetch_add(1, Relaxed);
    }

    #[test]
    fn memory_goes_back_once_per_quiet_spell() {
        set_release(count_release);
        let released = || RELEASED.load(Relaxed);
        let mut idle = IdleRelease::default();
        // Work at each look: nothing is given back.
        assert!(!idle.look(5));
        assert!(!idle.look(9));
        let before = released();
        // A whole look with nothing done: given back, once.
        assert!(idle.look(9));
        assert_eq!(released(), before + 1);
        assert!(!idle.look(9));
        assert!(!idle.look(9));
        assert_eq!(released(), before + 1);
        // Work again, then quiet again: given back again.
        assert!(!idle.look(10));
        assert!(idle.look(10));
        assert_eq!(released(), before + 2);
    }
}
