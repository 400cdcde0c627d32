//! Long write transactions give their core back now and then.
//!
//! The log writer runs on the core the request worker runs on (one worker, pinned, as in the
//! bench). A batch of a thousand records is milliseconds of work; run in one go, it holds up
//! every request the worker has in flight for that long, which is most of the added p99 at
//! c=32. Where the process may ([`background_allowed`]), the writer runs in the background, as
//! `SCHED_IDLE`: the kernel preempts it the moment the worker wakes, and it sleeps briefly after
//! each slice, since a worker that never sleeps never wakes ([`BACKGROUND_REST`]); so it has
//! little more than the core's idle time, and it leaves the background once it falls behind.
//! Elsewhere, inside [`run`], [`pace`] rests the thread once it has run for a slice, so the
//! worker has the core between slices; the batch, its transaction and its commit are the same.
//! A bare `sched_yield` is not enough: the scheduler (EEVDF) hands the core straight back to a
//! writer that slept through its batch window, so the rest is a short sleep.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

/// How long a paced thread runs before it rests: each slice is time every request in flight on
/// the worker waits. A resting thread that wakes takes the core from a busy worker at once (the
/// scheduler lets a woken thread that has used less than its share preempt), so a slice is the
/// longest it holds the worker up. At c=32 on one core, where the writer falls behind in the
/// background and runs paced, 100 µs slices gave an added p99 of +0.77 to +1.06 ms against
/// +1.22 to +1.54 ms with 1 ms slices (four alternating pairs), for ~0.4 µs more writer CPU per
/// logged request (its working set leaves the cache at each switch).
pub const SLICE: Duration = Duration::from_micros(100);

/// In the background, how long the thread sleeps after each slice. Being `SCHED_IDLE` is not
/// enough on its own: the kernel preempts it only when another thread wakes, and a worker at
/// full load never sleeps, so it never wakes. The scheduler (EEVDF) then lets a writer that
/// slept through its batch window run off its lag, up to a tick (4 ms at 250 Hz), while the
/// worker waits (seen with `perf sched`). A short sleep ends that run; the timer's slack makes it
/// ~50 µs, and on waking the idle thread gets the core only when the worker leaves it or at a tick.
const BACKGROUND_REST: Duration = Duration::from_micros(20);

/// How a paced thread gives its core to others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// It rests this long after each slice (zero: no rest, it runs on).
    Rest(Duration),
    /// It runs as `SCHED_IDLE`: whenever another thread on its core wakes, the kernel hands that
    /// thread the core at once, so it runs in the core's idle time and holds no one up. Once a
    /// slice it asks whether it has fallen behind; if so it leaves the background (a normal
    /// thread again, resting as the answer says after each slice) so that it cannot be starved.
    Background,
}

/// Whether it has fallen behind (see [`Mode::Background`]): `None` if not, else how long to rest
/// after each slice from then on.
pub type Behind = Box<dyn Fn() -> Option<Duration>>;

thread_local! {
    /// When the paced thread last started running, and how it gives way (`None`: not paced).
    static PACE: Cell<Option<(Instant, Mode)>> = const { Cell::new(None) };
    /// In the background: whether the thread has fallen behind.
    static BEHIND: RefCell<Option<Behind>> = const { RefCell::new(None) };
    /// When this thread's slice began (its last rest), kept from one [`run`] to the next: a
    /// thread that goes straight on to the next batch has no fresh slice for it.
    static SLICE_FROM: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this thread runs as `SCHED_IDLE` now.
    static IDLE: Cell<bool> = const { Cell::new(false) };
    /// How often this thread rested, in a [`Mode::Rest`] (for the tests).
    static RESTS: Cell<u64> = const { Cell::new(0) };
    /// How often this thread slept after a slice in the background (for the tests).
    static BACKGROUND_RESTS: Cell<u64> = const { Cell::new(0) };
    /// Requests that came to this thread (see [`served_here`]).
    static SERVED_HERE: Cell<u64> = const { Cell::new(0) };
}

/// Requests the process is serving now, in the low 32 bits, and how many have arrived so far
/// (wrapping), in the high 32 bits: one atomic add when a request arrives, one subtract when its
/// answer's head is ready (see [`serving`], [`requests_flowing`]).
static SERVING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One request in flight, and one more arrived (see [`SERVING`]).
const ARRIVED_ONE: u64 = 1 + (1 << 32);

/// How long after the last request it saw arrive a paced thread still counts requests as
/// coming ([`requests_flowing`]).
pub const FLOWING_FOR: Duration = Duration::from_millis(2);

/// A request being served, from its arrival until its answer's head is ready: while requests
/// are coming ([`requests_flowing`]), a paced thread's rests protect them; while none are,
/// resting only slows the thread down (the log writer draining a burst on an otherwise idle
/// core).
#[must_use = "the request counts as served only while this lives"]
pub struct Serving(());

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts a request as being served until the value is dropped.
pub fn serving() -> Serving {
    SERVING.fetch_add(ARRIVED_ONE, std::sync::atomic::Ordering::Relaxed);
    SERVED_HERE.set(SERVED_HERE.get().wrapping_add(1));
    Serving(())
}

/// How many requests are being served now.
#[must_use]
pub fn serving_count() -> usize {
    usize::try_from(SERVING.load(std::sync::atomic::Ordering::Relaxed) & u64::from(u32::MAX)).unwrap_or(usize::MAX)
}

/// Whether requests are coming to this process: one is being served now, or one arrived within
/// [`FLOWING_FOR`] before the calling thread's look (each thread keeps what it last saw).
///
/// Whether one is being served is not enough on its own. A request counts as served only from
/// its arrival until its answer's head is ready, which for an answer from the cache is a few
/// microseconds; at c=32 on one core, with the worker saturated, the log writer most often
/// looked while none was, ran on without a rest, and held the core for the scheduler's whole
/// slice (1–2.3 ms, about once a batch) while the next requests waited unread in their sockets:
/// cache hits at c=32 had an added p99 of about 2 ms. Requests that arrived since the last look
/// show that the worker has work; a burst of logs on an idle core still drains at full speed
/// once [`FLOWING_FOR`] has passed with none.
#[must_use]
pub fn requests_flowing() -> bool {
    thread_local! {
        /// The arrivals this thread last saw, and when it first saw that count.
        static SEEN: Cell<Option<(u32, Instant)>> = const { Cell::new(None) };
    }
    let state = SERVING.load(std::sync::atomic::Ordering::Relaxed);
    SEEN.with(|seen| {
        let (flowing, now_seen) = flowing(state, seen.get(), Instant::now());
        seen.set(now_seen);
        flowing
    })
}

/// [`requests_flowing`] for the counter's `state` at `now`, given what was `seen` before; also
/// returns what is seen now. A count not seen before is taken as having changed just now.
fn flowing(state: u64, seen: Option<(u32, Instant)>, now: Instant) -> (bool, Option<(u32, Instant)>) {
    let in_flight = state & u64::from(u32::MAX) != 0;
    let arrived = (state >> 32) as u32;
    match seen {
        Some((count, since)) if count == arrived => (in_flight || now.duration_since(since) < FLOWING_FOR, seen),
        // Nothing has ever arrived: nothing to rest for.
        None if arrived == 0 => (in_flight, None),
        _ => (true, Some((arrived, now))),
    }
}

/// How many requests came to this thread so far (a worker: whether it has gone idle,
/// [`crate::memory`]).
#[must_use]
pub fn served_here() -> u64 {
    SERVED_HERE.get()
}

/// Whether this process may run a thread in the background: a thread may always become
/// `SCHED_IDLE`, but only with `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 or more (systemd's
/// `LimitNICE=+0`) may it become a normal thread again, which a thread that falls behind must.
/// Asked once, of a thread made for the question, so no thread that matters can be left stuck in
/// the background. Not for a process started niced (systemd's `Nice=`): the policies' calls set
/// niceness 0, which would undo the operator's choice.
#[cfg(target_os = "linux")]
pub fn background_allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        std::thread::Builder::new()
            .name("torii-sched-probe".into())
            .spawn(|| {
                rustix::process::getpriority_process(None).is_ok_and(|nice| nice == 0)
                    && set_idle(true)
                    && set_idle(false)
            })
            .is_ok_and(|probe| probe.join().unwrap_or(false))
    })
}

/// Elsewhere there is no background: the writer rests between slices.
#[cfg(not(target_os = "linux"))]
pub fn background_allowed() -> bool {
    false
}

/// Makes this thread `SCHED_IDLE` (`true`) or a normal thread (`false`); whether it took.
#[cfg(not(target_os = "linux"))]
fn set_idle(_idle: bool) -> bool {
    false
}

/// Makes this thread `SCHED_IDLE` (`true`) or a normal thread (`false`); whether it took.
#[cfg(target_os = "linux")]
fn set_idle(idle: bool) -> bool {
    let policy = if idle { NormalThreadSchedulePolicy::Idle } else { NormalThreadSchedulePolicy::Other };
    // Priority 0, the only one these policies have; the call also sets niceness 0, which the
    // thread has (see `background_allowed`).
    let priority = ThreadPriority::Os(ThreadPriorityOsValue::default());
    let ok = set_thread_priority_and_policy(thread_native_id(), priority, ThreadSchedulePolicy::Normal(policy)).is_ok();
    if ok {
        IDLE.set(idle);
    }
    ok
}

/// Runs `f` paced by `mode`; in the background `behind` is asked once a slice (without it the
/// thread stays in the background). Also returns whether the thread left the background because
/// it had fallen behind. A thread that is `SCHED_IDLE` from an earlier call becomes normal
/// before `f` runs in a [`Mode::Rest`].
pub fn run<T>(mode: Mode, behind: Option<Behind>, f: impl FnOnce() -> T) -> (T, bool) {
    /// Puts the thread's pacing back as it was, even when `f` panics (redb can, on a damaged
    /// page, and the log writer catches it and goes on).
    struct Restore(Option<(Instant, Mode)>, Option<Behind>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SLICE_FROM.set(PACE.get().map(|(from, _)| from));
            PACE.set(self.0);
            BEHIND.set(self.1.take());
        }
    }
    let idle = mode == Mode::Background;
    if idle != IDLE.get() && !set_idle(idle) {
        // Said once: the probe found the calls allowed, so this is a changed limit, not news.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| tracing::warn!(idle, "a background thread could not change its scheduling policy"));
    }
    let started_idle = IDLE.get();
    let from = SLICE_FROM.get().unwrap_or_else(Instant::now);
    let _restore = Restore(PACE.replace(Some((from, mode))), BEHIND.replace(behind));
    let value = f();
    (value, started_idle && !IDLE.get())
}

/// The thread has just left the core of its own accord (it slept waiting for work): its next
/// [`run`] starts a fresh slice.
pub fn rested() {
    SLICE_FROM.set(Some(Instant::now()));
}

/// Whether this thread is inside [`run`] (the log writer's batch), where [`pace`] rests it.
#[must_use]
pub fn paced() -> bool {
    PACE.get().is_some()
}

/// Inside [`run`]: rests the thread when it has run for a slice since it last rested.
/// Anywhere else it does nothing (the same store code runs on the control plane's threads).
pub fn pace() {
    rest_once(|ran| ran >= SLICE);
}

/// Inside [`run`]: rests the thread before work that cannot be paced from within, unless its
/// slice has only just begun. redb's commit (its page writes and `fdatasync`) runs about a
/// millisecond for a batch of a thousand logged records; begun at the end of a slice, it kept
/// the worker off the core for two slices' time in one go.
pub fn before_unpaced() {
    rest_once(worth_a_rest);
}

/// Inside [`run`]: rests the thread when its slice has run for long enough by `due`, and starts
/// a new slice. In the background it asks whether it has fallen behind, and leaves the background
/// then; else it sleeps [`BACKGROUND_REST`].
fn rest_once(due: impl Fn(Duration) -> bool) {
    PACE.with(|pace| {
        let Some((at, mode)) = pace.get() else { return };
        if !due(at.elapsed()) {
            return;
        }
        let mode = match mode {
            Mode::Background => match BEHIND.with_borrow(|b| b.as_ref().and_then(|behind| behind())) {
                Some(rest) if set_idle(false) => Mode::Rest(rest),
                _ => {
                    std::thread::sleep(BACKGROUND_REST);
                    BACKGROUND_RESTS.set(BACKGROUND_RESTS.get() + 1);
                    Mode::Background
                }
            },
            Mode::Rest(rest) => {
                // No rest: the thread runs on. Not a yield: the scheduler (EEVDF) then holds a
                // thread that yields off a busy core for the rest of the other's slice, so a
                // writer fallen far behind got about a tenth of the core, not the most of it.
                if !rest.is_zero() {
                    std::thread::sleep(rest);
                }
                RESTS.set(RESTS.get() + 1);
                Mode::Rest(rest)
            }
        };
        pace.set(Some((Instant::now(), mode)));
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

    /// This thread's scheduling policy as the kernel reports it (0 normal, 5 `SCHED_IDLE`).
    #[cfg(target_os = "linux")]
    fn policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command's closing parenthesis start at the third; policy is the 41st.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.split_whitespace().nth(41 - 3).unwrap().parse().unwrap()
    }

    /// In the background a thread is `SCHED_IDLE` and sleeps briefly after each slice; it asks
    /// once a slice whether it has fallen behind and is a normal thread from the first yes, for
    /// the rest of the work too, resting as the answer says. Where the process may not bring a
    /// thread back, the probe says so, and rightly.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_is_idle_until_it_falls_behind() {
        std::thread::spawn(|| {
            if !background_allowed() {
                // The probe's verdict, checked on a thread of its own: started niced, or a
                // thread cannot become idle and normal again.
                let refused = std::thread::spawn(|| {
                    let unniced = rustix::process::getpriority_process(None).is_ok_and(|nice| nice == 0);
                    !(unniced && set_idle(true) && set_idle(false))
                });
                assert!(refused.join().unwrap(), "the probe refused a background that works");
                return;
            }
            assert_eq!(policy(), 0);
            let asked = std::rc::Rc::new(Cell::new(0u32));
            let counter = std::rc::Rc::clone(&asked);
            let behind: Behind = Box::new(move || {
                counter.set(counter.get() + 1);
                (counter.get() >= 3).then_some(Duration::ZERO)
            });
            let rests = RESTS.get();
            let rest_points = || RESTS.get() - rests;
            let slept = BACKGROUND_RESTS.get();
            let slept = || BACKGROUND_RESTS.get() - slept;
            let ((during, after), fell_behind) = run(Mode::Background, Some(behind), || {
                let during = policy();
                // Until it has asked three times and passed two rest points since (polled, with a
                // deadline).
                let deadline = Instant::now() + Duration::from_secs(10);
                while (asked.get() < 3 || rest_points() < 2) && Instant::now() < deadline {
                    pace();
                }
                (during, policy())
            });
            assert_eq!((during, after), (5, 0), "idle in the background, normal once behind");
            assert!(fell_behind);
            assert_eq!(asked.get(), 3, "asked once a slice until the first yes, then no more");
            assert_eq!(rest_points(), 2, "a rest point a slice once behind (no rest: it runs on)");
            assert_eq!(slept(), 2, "a short sleep after each slice in the background, until behind");
            // Not behind: it stays in the background to the end, and a later rest mode is normal.
            let (during, fell_behind) = run(Mode::Background, Some(Box::new(|| None)), || {
                let until = Instant::now() + SLICE * 3;
                while Instant::now() < until {
                    pace();
                }
                policy()
            });
            assert_eq!((during, fell_behind), (5, false));
            assert!(slept() > 2, "not behind, it sleeps after a slice all the same");
            assert_eq!(run(Mode::Rest(Duration::ZERO), None, policy), (0, false));
        })
        .join()
        .unwrap();
    }

    /// `f` run resting `rest` after each slice (zero: no rest, a new slice begins).
    fn paced<T>(rest: Duration, f: impl FnOnce() -> T) -> T {
        run(Mode::Rest(rest), None, f).0
    }

    /// Requests count as coming while one is served, and for [`FLOWING_FOR`] after the thread
    /// last saw one arrive, whether or not it is still served (an answer from the cache is served
    /// for a few microseconds); before any has arrived, none are coming. The clock is passed in.
    #[test]
    fn requests_flow_while_served_and_shortly_after_one_arrives() {
        let t0 = Instant::now();
        let state = |in_flight: u64, arrived: u64| (arrived << 32) | in_flight;
        assert_eq!(flowing(state(0, 0), None, t0), (false, None), "nothing has arrived yet");
        assert_eq!(flowing(state(1, 0), None, t0), (true, None), "one in flight, the count wrapped");
        // A count first seen is taken as new; it goes on counting until FLOWING_FOR has passed.
        let (yes, seen) = flowing(state(0, 7), None, t0);
        assert!(yes);
        assert_eq!(seen, Some((7, t0)));
        let later = |by: Duration| flowing(state(0, 7), seen, t0 + by);
        assert_eq!(later(FLOWING_FOR / 2), (true, seen), "served and gone, but recent");
        assert_eq!(later(FLOWING_FOR), (false, seen), "none for FLOWING_FOR");
        assert_eq!(flowing(state(1, 7), seen, t0 + FLOWING_FOR * 10), (true, seen), "one still served");
        // A new arrival, long after: seen now, counting again from now.
        let at = t0 + FLOWING_FOR * 10;
        assert_eq!(flowing(state(0, 8), seen, at), (true, Some((8, at))));
        // The live counter: a request served and answered shows as an arrival to a fresh thread.
        std::thread::spawn(|| {
            drop(serving());
            assert!(requests_flowing(), "a request arrived since this thread last looked");
        })
        .join()
        .unwrap();
    }

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
        let rest_points = RESTS.get() - before;
        assert!((1..=5).contains(&rest_points), "{rest_points} rest points over five slices");
        // With a rest: the call after a slice's work sleeps for it.
        let slept = paced(SLICE * 2, || {
            let until = Instant::now() + SLICE;
            while Instant::now() < until {}
            let at = Instant::now();
            pace();
            at.elapsed()
        });
        assert!(slept >= SLICE * 2, "rested {slept:?}");
        assert_eq!(RESTS.get() - before, rest_points + 1);
        spin(3);
        assert_eq!(RESTS.get() - before, rest_points + 1, "pacing ends with `paced`");
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
        assert_eq!(RESTS.get() - before, rest_points + 2, "pacing ends when `paced` unwinds");
    }
}
