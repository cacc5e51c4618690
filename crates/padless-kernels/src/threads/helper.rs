//! The helper thread that [`run_team`](super::run_team) hands the second worker to: one
//! thread for the whole process, started on first use and kept, instead of a new thread per
//! kernel call.
//!
//! A training step of the SPEC model makes about eight two-thread calls (the recurrent
//! layers forward and backward, the dense layer, Adam); starting and joining a thread for each
//! costs tens of microseconds. The kept thread waits for work by spinning briefly and then
//! sleeping on a condition variable, so it costs nothing between training steps.
//!
//! A job borrows the caller's stack (its closure, its barrier, its buffers): [`run_on_helper`]
//! does not return, and does not unwind, before the job has finished, as
//! `std::thread::scope` guarantees for scoped threads. Only one caller uses the helper at a
//! time; a concurrent caller (tests run in parallel) gets `None` and runs its own scoped
//! thread.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};

/// A job as the helper sees it: a closure whose borrows outlive its run (see the module docs).
type Job = &'static (dyn Fn() + Sync);

/// Spins of the helper waiting for the next job before it sleeps (tens of microseconds: the
/// calls of one training step come that close together).
const IDLE_SPINS: u32 = 20_000;

struct Helper {
    /// The job posted and not yet taken.
    slot: Mutex<Option<Job>>,
    /// Whether `slot` holds a job (read while spinning, without the lock).
    posted: AtomicBool,
    wake: Condvar,
    /// Jobs finished so far.
    finished: AtomicUsize,
    /// Whether the last job panicked.
    panicked: AtomicBool,
}

/// The helper and the lock that gives one caller at a time its use.
struct Shared {
    helper: &'static Helper,
    in_use: Mutex<()>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            slot: Mutex::new(None),
            posted: AtomicBool::new(false),
            wake: Condvar::new(),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name("padless-kernels-helper".into())
            .spawn(move || helper.serve())
            .expect("starting the kernels' helper thread");
        Shared {
            helper,
            in_use: Mutex::new(()),
        }
    })
}

impl Helper {
    fn serve(&self) {
        loop {
            let job = self.next_job();
            let ok = catch_unwind(AssertUnwindSafe(job)).is_ok();
            self.panicked.store(!ok, Ordering::Relaxed);
            self.finished.fetch_add(1, Ordering::Release);
        }
    }

    fn next_job(&self) -> Job {
        let mut spins = 0;
        while !self.posted.load(Ordering::Acquire) && spins < IDLE_SPINS {
            std::hint::spin_loop();
            spins += 1;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = slot.take() {
                self.posted.store(false, Ordering::Relaxed);
                return job;
            }
            slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Runs `theirs` on the helper thread and `mine` on this one, and returns when both are done
/// (re-raising a panic of either); `None`, running nothing, when another caller is using the
/// helper.
pub(crate) fn run_on_helper(mine: impl FnOnce(), theirs: &(dyn Fn() + Sync)) -> Option<()> {
    let shared = shared();
    let _guard = match shared.in_use.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    let helper = shared.helper;
    let before = helper.finished.load(Ordering::Acquire);
    // SAFETY: the job's borrows live until this function returns, and it returns (or
    // unwinds) only after `finished` has moved past `before`, that is after the job ran.
    let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(theirs) };
    {
        let mut slot = helper.slot.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(job);
        helper.posted.store(true, Ordering::Release);
    }
    helper.wake.notify_one();
    let result = catch_unwind(AssertUnwindSafe(mine));
    super::team::spin_until(|| helper.finished.load(Ordering::Acquire) != before);
    if let Err(panic) = result {
        resume_unwind(panic);
    }
    if helper.panicked.load(Ordering::Relaxed) {
        panic!("a kernel thread panicked (its message is above)");
    }
    Some(())
}

/// Runs `mine` on this thread and `theirs` on one more, and returns both results once both
/// are done; a panic of either reaches the caller. The other thread is the kept helper that
/// the kernels' thread pair uses when it is free (no thread started, and memory the helper
/// freed is reused), else a scoped thread. For two independent pieces of work beside the
/// kernels, such as the two directions of a `Bidirectional` layer or the models of an
/// ensemble, each running its own kernels on one thread.
pub fn side_by_side<A, B: Send>(
    mine: impl FnOnce() -> A,
    theirs: impl FnOnce() -> B + Send,
) -> (A, B) {
    // Their part runs with this thread's instruction-set choice (`isa::with_isa`).
    let choice = crate::isa::thread_isa();
    let theirs = move || crate::isa::with_thread_isa(choice, theirs);
    let job = Mutex::new(Some(theirs));
    let result = Mutex::new(None);
    let run_theirs = || {
        let f = job.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            let out = f();
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        }
    };
    let mut mine = Some(mine);
    let mut mine_out = None;
    let on_helper = run_on_helper(|| mine_out = mine.take().map(|f| f()), &run_theirs);
    if on_helper.is_none() {
        std::thread::scope(|scope| {
            let other = scope.spawn(run_theirs);
            mine_out = mine.take().map(|f| f());
            other.join().unwrap_or_else(|panic| resume_unwind(panic));
        });
    }
    let theirs = result
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .expect("the other thread's part ran");
    (mine_out.expect("this thread's part ran"), theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_run_and_the_helper_is_reused() {
        let (a, b) = (AtomicUsize::new(0), AtomicUsize::new(0));
        for i in 1..=50 {
            let ran = run_on_helper(
                || {
                    a.fetch_add(1, Ordering::Relaxed);
                },
                &|| {
                    b.fetch_add(i, Ordering::Relaxed);
                },
            );
            if ran.is_none() {
                // Another test holds the helper: nothing ran.
                continue;
            }
        }
        let ran = a.load(Ordering::Relaxed);
        assert!(ran > 0, "the helper was never free");
        assert!(
            b.load(Ordering::Relaxed) >= ran,
            "each run ran the helper's part"
        );
    }

    #[test]
    fn side_by_side_returns_both_parts_on_the_helper_or_beside_it() {
        let other = || std::thread::current().id();
        for i in 0..20u64 {
            let ((a, outer), (b, inner)) = side_by_side(
                // The outer call may hold the helper: the inner one then runs a scoped thread.
                || (i * 3, side_by_side(|| i + 1, || format!("{i}"))),
                move || (i * 5, other()),
            );
            assert_eq!((a, b), (i * 3, i * 5));
            assert_eq!(outer, (i + 1, format!("{i}")));
            assert_ne!(
                inner,
                std::thread::current().id(),
                "their part ran on another thread"
            );
        }
        let panicked =
            catch_unwind(|| side_by_side(|| 1, || -> u32 { panic!("their part fails") }));
        assert!(panicked.is_err());
        assert_eq!(side_by_side(|| 2, || 3), (2, 3));
    }

    #[test]
    fn a_panic_in_the_helper_reaches_the_caller_and_the_helper_survives() {
        let outcome = catch_unwind(|| {
            loop {
                if run_on_helper(|| (), &|| panic!("helper part fails")).is_some() {
                    break;
                }
            }
        });
        assert!(outcome.is_err());
        let done = AtomicBool::new(false);
        loop {
            if run_on_helper(|| (), &|| done.store(true, Ordering::Relaxed)).is_some() {
                break;
            }
        }
        assert!(done.load(Ordering::Relaxed));
    }
}
