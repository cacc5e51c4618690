//! The thread pair: [`run_team`] runs one closure on 1 or 2 threads that meet at a
//! [`Barrier`] where their work depends on each other's, and [`Shared`] lets them write
//! disjoint parts of one buffer.
//!
//! Measured on 2 cores (see the crate README numbers): gemm's own 2-thread mode on the small
//! per-step products is slower than 1 thread at `d_hidden = 128`; two threads that each own
//! half the gate columns for the whole sequence and meet once per step are faster, and two
//! that each own half of the rows of every step and never meet inside the loop faster still
//! (see `blocks::StepShare`). The second worker runs on the process's kept helper thread
//! ([`super::helper`]), or on a scoped thread when another caller is using it; either way it
//! only borrows the buffers it touches, and the call returns after it has finished.

use std::sync::atomic::{AtomicUsize, Ordering};

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
/// thread must not starve the one it waits for.
pub(crate) struct Barrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Barrier {
    fn new() -> Self {
        Barrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    fn wait(&self, count: usize) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == count {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        spin_until(|| self.generation.load(Ordering::Acquire) != generation);
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
    if count == 2 {
        super::helper::side_by_side(|| body(worker(0)), || body(worker(1)));
        return;
    }
    std::thread::scope(|scope| {
        for index in 1..count {
            let (body, barrier) = (&body, &barrier);
            scope.spawn(move || {
                body(Worker {
                    index,
                    count,
                    barrier,
                })
            });
        }
        body(Worker {
            index: 0,
            count,
            barrier: &barrier,
        });
    });
}

/// A buffer that the threads of a team write in disjoint parts.
///
/// # Safety contract
/// Every method that hands out a slice is `unsafe`: the caller guarantees that no two threads
/// access overlapping elements between two barriers unless all of them only read. The kernels
/// keep this by giving each thread its own gate columns and hidden units, or its own rows, and
/// by a [`Worker::sync`] between a write and any read of another thread's part.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` is a pointer to a buffer that outlives the team run (it is made from a
// borrow held across `run_team`); the access discipline above makes concurrent use sound.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Shares a mutable buffer.
    pub fn new(buffer: &mut [T]) -> Self {
        Shared {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
        }
    }

    /// Shares room for `len` elements in `buffer`'s spare capacity, for a team that writes
    /// every element with [`Shared::write`] before anything reads it (no zero fill first);
    /// the caller sets the length after the team.
    pub fn uninit(buffer: &mut Vec<T>, len: usize) -> Self {
        buffer.clear();
        buffer.reserve_exact(len);
        Shared {
            ptr: buffer.as_mut_ptr(),
            len,
        }
    }

    /// Copies `src` to `start..start + src.len()` through a raw pointer: what was there is
    /// neither read nor borrowed, so this is how an [`Shared::uninit`] buffer is first filled.
    ///
    /// # Safety
    /// See the type's contract; `start + src.len()` must not pass the end (checked).
    pub unsafe fn write(&self, start: usize, src: &[T]) {
        assert!(start + src.len() <= self.len, "shared write out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract; `src` is a
        // live borrow that cannot overlap this buffer's unborrowed spare capacity.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(start), src.len()) }
    }

    /// Shares a buffer that every thread only reads.
    pub fn read_only(buffer: &[T]) -> Self {
        Shared {
            ptr: buffer.as_ptr() as *mut T,
            len: buffer.len(),
        }
    }

    /// The start of the buffer (for gemm, which takes pointers and strides).
    pub fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// `len` elements from `start`, for writing.
    ///
    /// # Safety
    /// See the type's contract; `start + len` must not pass the end (checked).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut<'a>(&self, start: usize, len: usize) -> &'a mut [T] {
        assert!(start + len <= self.len, "shared slice out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// `len` elements from `start`, for reading.
    ///
    /// # Safety
    /// See the type's contract; `start + len` must not pass the end (checked).
    pub unsafe fn slice<'a>(&self, start: usize, len: usize) -> &'a [T] {
        assert!(start + len <= self.len, "shared slice out of bounds");
        // SAFETY: in bounds (checked above); no concurrent writer is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
