//! [`run_team`]: one closure on 1 or 2 threads that meet at a [`Barrier`] where their work
//! depends on each other's.
//!
//! The kernels split their work themselves rather than through gemm's threads: the per-step
//! products are small, and two threads that each own half of the rows of every step (or half
//! of the hidden units) for the whole sequence meet at most once per step
//! (`rnn::blocks::StepShare`). The second worker runs on the process's kept helper thread
//! ([`super::helper`]), or on a scoped thread when another caller is using it; either way it
//! only borrows the buffers it touches, and the call returns after it has finished.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One thread's view of a team run.
#[derive(Clone, Copy)]
pub(crate) struct Worker<'a> {
    /// This thread's index, `0..count`.
    pub index: usize,
    /// Threads in the team.
    pub count: usize,
    barrier: &'a Barrier,
}

impl Worker<'_> {
    /// Waits until every thread of the team has reached this point.
    pub fn sync(&self) {
        if self.count > 1 {
            self.barrier.wait(self.count);
        }
    }

    /// This thread's part `[start, end)` of `0..total`.
    pub fn part(&self, total: usize) -> (usize, usize) {
        split(total, self.index, self.count)
    }
}

/// Part `index` of `count` near-equal parts of `0..total`.
pub(crate) fn split(total: usize, index: usize, count: usize) -> (usize, usize) {
    (total * index / count, total * (index + 1) / count)
}

/// A reusable barrier that spins briefly and then yields: the threads meet every few
/// microseconds, far below the latency of a futex wake-up, but on a busy machine a spinning
/// thread must not starve the one it waits for. A worker that panics breaks it
/// ([`Barrier::break_on_panic`]): the others then panic at their next wait instead of waiting
/// for ever.
pub(crate) struct Barrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    broken: AtomicBool,
}

impl Barrier {
    fn new() -> Self {
        Barrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }
    }

    fn wait(&self, count: usize) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == count {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        spin_until(|| {
            self.generation.load(Ordering::Acquire) != generation
                || self.broken.load(Ordering::Relaxed)
        });
        if self.generation.load(Ordering::Acquire) == generation {
            panic!("another kernel thread panicked (its message is above)");
        }
    }

    /// Runs `f`, breaking the barrier if it panics.
    fn break_on_panic(&self, f: impl FnOnce()) {
        struct Guard<'a>(&'a AtomicBool);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
        }
        let _guard = Guard(&self.broken);
        f();
    }
}

/// Waits until `done()`: spins briefly (the threads meet every few microseconds, far below a
/// futex wake-up), then yields so that a spinning thread cannot starve the one it waits for.
pub(crate) fn spin_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < 20_000 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Runs `body` on `threads` threads (1 or more): the calling thread is worker 0; with 2 the
/// other is the kept helper thread when it is free, else (and for more) scoped threads
/// joined before this returns.
pub(crate) fn run_team(threads: usize, body: impl Fn(Worker<'_>) + Sync) {
    let barrier = Barrier::new();
    let count = threads.max(1);
    let worker = |index| Worker {
        index,
        count,
        barrier: &barrier,
    };
    if count == 1 {
        body(worker(0));
        return;
    }
    let run = |index| barrier.break_on_panic(|| body(worker(index)));
    if count == 2 {
        super::helper::side_by_side(|| run(0), || run(1));
        return;
    }
    // More threads than the pair: scoped threads, taking over this thread's instruction set.
    let choice = crate::isa::thread_isa();
    std::thread::scope(|scope| {
        for index in 1..count {
            let run = &run;
            scope.spawn(move || crate::isa::with_thread_isa(choice, || run(index)));
        }
        run(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::threads::Shared;

    #[test]
    fn two_threads_fill_their_halves_in_lockstep() {
        let mut data = vec![0usize; 100];
        let shared = Shared::new(&mut data);
        run_team(2, |w| {
            for round in 0..50 {
                let (start, end) = w.part(100);
                // SAFETY: each thread writes its own half between barriers.
                let own = unsafe { shared.slice_mut(start, end - start) };
                own.iter_mut().for_each(|v| *v += 1);
                w.sync();
                // SAFETY: every thread only reads between these two barriers.
                let all = unsafe { shared.slice(0, 100) };
                assert!(all.iter().all(|&v| v == round + 1));
                w.sync();
            }
        });
        assert!(data.iter().all(|&v| v == 50));
    }

    #[test]
    fn a_panicking_worker_fails_the_team_instead_of_hanging_it() {
        for panicking in [0, 1] {
            let outcome = std::panic::catch_unwind(|| {
                run_team(2, |w| {
                    if w.index == panicking {
                        panic!("worker {panicking} fails");
                    }
                    w.sync();
                    w.sync();
                })
            });
            assert!(outcome.is_err());
        }
    }
}
