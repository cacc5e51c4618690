//! The runtime's switches: the fused operations on or off, and the threads of each kernel
//! call, for the whole process or for the calling thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::LocalKey;

static FUSED: AtomicBool = AtomicBool::new(true);
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COMPOSITE_HERE: Cell<bool> = const { Cell::new(false) };
    static THREADS_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Switches the fused operations on or off for the whole process (default on). Off, the
/// recurrent loops, the dense layer, `tanh`, softmax, the categorical cross-entropy and Adam
/// run as burn's composite operations, as they do on other backends.
pub fn set_fused_enabled(enabled: bool) {
    FUSED.store(enabled, Ordering::Relaxed);
}

/// Whether an operation called on this thread now would try its fused form: the process-wide
/// switch ([`set_fused_enabled`]) is on and this thread is not inside [`with_composite`].
pub fn fused_enabled() -> bool {
    FUSED.load(Ordering::Relaxed) && !composite_here()
}

/// Runs `f` with the composite operations on this thread (the reference the fused ones are
/// compared with). Restored when `f` returns or unwinds.
pub fn with_composite<R>(f: impl FnOnce() -> R) -> R {
    with_thread_setting(&COMPOSITE_HERE, true, f)
}

/// Whether this thread is inside [`with_composite`] (a thread started from it must enter it
/// again to keep the composite operations).
fn composite_here() -> bool {
    COMPOSITE_HERE.with(Cell::get)
}

/// Sets the threads of every CPU kernel call (the recurrent loops, the dense layer's
/// products): 1, or 2 for the kernels' thread pair; 0 restores the default (2 where the
/// process may use 2 or more cores, else 1).
pub fn set_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

/// Runs `f` with the kernels called on this thread using `threads` threads (1, or 2 for the
/// thread pair) whatever the process-wide setting ([`set_threads`]); 0 defers to it. Work
/// that already runs side by side on its own threads keeps each kernel on one thread this
/// way. Restored when `f` returns or unwinds.
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    with_thread_setting(&THREADS_HERE, threads, f)
}

/// The threads the kernels called on this thread use: [`with_threads`]'s, else the
/// process-wide setting ([`set_threads`]).
pub fn threads() -> usize {
    let here = THREADS_HERE.with(Cell::get);
    if here != 0 {
        return here;
    }
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        n => n,
    }
}

/// Runs `a` and `b`, side by side when the kernels called here may use two threads
/// ([`threads`]): `a` on this thread and `b` on the kernels' kept helper (or a scoped thread,
/// [`padless_kernels::side_by_side`]), each with one-thread kernels and this thread's
/// composite switch; else one after the other as they are. For independent pieces of work
/// that each run kernels (the models of an ensemble, the two directions of a G2P pair): two of
/// them side by side, each on one core, need no meeting between the cores inside a kernel
/// call, which the thread pair has once per step. The results are the same either way; a
/// panic of either reaches the caller.
pub fn side_by_side<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if threads() < 2 {
        let first = a();
        return (first, b());
    }
    let composite = composite_here();
    let one_thread = move |f: Box<dyn FnOnce() + Send + '_>| {
        let run = || with_threads(1, f);
        if composite {
            with_composite(run)
        } else {
            run()
        }
    };
    let (mut first, mut second) = (None, None);
    padless_kernels::side_by_side(
        || one_thread(Box::new(|| first = Some(a()))),
        || one_thread(Box::new(|| second = Some(b()))),
    );
    (
        first.expect("side_by_side ran a"),
        second.expect("side_by_side ran b"),
    )
}

/// Runs `f` with this thread's `setting` at `value`, restoring the previous value when `f`
/// returns or unwinds (a drop guard).
fn with_thread_setting<T: Copy + 'static, R>(
    setting: &'static LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(setting, setting.with(|c| c.replace(value)));
    f()
}
