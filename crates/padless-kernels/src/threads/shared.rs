//! [`Shared`]: a mutable buffer that the threads of a team write in disjoint parts.

use std::marker::PhantomData;

/// A mutable buffer, borrowed for `'buf`, that the threads of a team write in disjoint parts.
///
/// A `Shared` is a copyable handle on one exclusive borrow: every copy lives at most as long
/// as the borrow, and every slice it hands out at most as long as the copy it came from.
///
/// # Safety contract
/// Every method that hands out a slice, or writes, is `unsafe`: the caller guarantees that
/// no two threads access overlapping elements between two barriers unless all of them only
/// read, and (for a buffer made by [`Shared::uninit`]) that nothing reads an element before
/// it was written. The kernels keep this by giving each thread its own gate columns and
/// hidden units, or its own rows, and by a `Worker::sync` between a write and any read of
/// another thread's part.
pub(crate) struct Shared<'buf, T> {
    ptr: *mut T,
    len: usize,
    buffer: PhantomData<&'buf mut [T]>,
}

impl<T> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<'_, T> {}

// SAFETY: a `Shared` stands for a `&'buf mut [T]` handed to several threads, so it may move to
// another thread where `T` may; the access discipline of the type's contract makes the
// concurrent use of its copies sound.
unsafe impl<T: Send> Send for Shared<'_, T> {}
// SAFETY: as above; threads that read the same elements between barriers need `T: Sync`.
unsafe impl<T: Send + Sync> Sync for Shared<'_, T> {}

impl<'buf, T> Shared<'buf, T> {
    /// Shares a mutable buffer for as long as it is borrowed.
    pub fn new(buffer: &'buf mut [T]) -> Self {
        Shared {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            buffer: PhantomData,
        }
    }

    /// Shares room for `len` elements in `buffer`'s spare capacity (cleared first), for a team
    /// that writes every element with [`Shared::write`] before anything reads it, so that no
    /// zero fill is needed; the caller sets the length after the team.
    pub fn uninit(buffer: &'buf mut Vec<T>, len: usize) -> Self {
        buffer.clear();
        buffer.reserve_exact(len);
        Shared {
            ptr: buffer.as_mut_ptr(),
            len,
            buffer: PhantomData,
        }
    }

    /// The elements shared.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A pointer to element `offset`, for products, which take pointers and strides (a
    /// product with no rows reads nothing, so an empty buffer's pointer may be past its end).
    /// Dereferencing it is the caller's contract.
    pub fn ptr_at(&self, offset: usize) -> *mut T {
        debug_assert!(
            offset <= self.len || self.len == 0,
            "shared offset {offset} past {}",
            self.len
        );
        self.ptr.wrapping_add(offset)
    }

    /// Copies `src` to `start..start + src.len()` through a raw pointer: what was there is
    /// neither read nor borrowed, so this is how an [`Shared::uninit`] buffer is first filled.
    ///
    /// # Safety
    /// See the type's contract.
    ///
    /// # Panics
    /// If the range passes the end.
    pub unsafe fn write(&self, start: usize, src: &[T])
    where
        T: Copy,
    {
        assert!(start + src.len() <= self.len, "shared write out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract; `src` is a
        // live borrow, which cannot overlap this buffer's elements while they are shared.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(start), src.len()) }
    }

    /// `len` elements from `start`, for writing.
    ///
    /// # Safety
    /// See the type's contract.
    ///
    /// # Panics
    /// If the range passes the end.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "shared slice out of bounds");
        // SAFETY: in bounds (checked above); the elements live for `'buf`, which outlives
        // `self`; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// `len` elements from `start`, for reading.
    ///
    /// # Safety
    /// See the type's contract.
    ///
    /// # Panics
    /// If the range passes the end.
    pub unsafe fn slice(&self, start: usize, len: usize) -> &[T] {
        assert!(start + len <= self.len, "shared slice out of bounds");
        // SAFETY: in bounds (checked above); the elements live for `'buf`; no concurrent
        // writer, and every element written, are the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) }
    }
}
