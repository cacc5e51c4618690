//! Matrix products through the `gemm` crate, on row-major buffers with explicit strides.

use crate::real::Real;

/// A strided matrix operand: element `(r, c)` is at `ptr + r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct View<T> {
    pub ptr: *const T,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<T> View<T> {
    /// A row-major matrix with `cols` columns per row, from `ptr`.
    pub fn rows(ptr: *const T, cols: usize) -> Self {
        View {
            ptr,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns per row (a strided view, no
    /// copy: fast when the product is long in the inner dimension, as weight gradients are).
    pub fn transposed(ptr: *const T, cols: usize) -> Self {
        View {
            ptr,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// `C[m, n] = A[m, k] · B[k, n]`, or `C += A · B` with `accumulate`; `C` is row-major with
/// `c_row_stride` elements per row. Single-threaded: the kernels split work themselves.
///
/// # Safety
/// Every element the shapes and strides address must be inside live buffers, and no other
/// thread may touch the addressed part of `C` during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    c_row_stride: usize,
    accumulate: bool,
    a: View<T>,
    b: View<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for col in 0..n {
                    // SAFETY: inside C by the caller's contract.
                    unsafe { *c.add(r * c_row_stride + col) = T::ZERO };
                }
            }
        }
        return;
    }
    if crate::amx::bf16_path::<T>() {
        let (b_ptr, b_rows, b_cols) = (b.ptr, b.row_stride, b.col_stride);
        // SAFETY: inside B by the caller's contract; T is f32 (checked above), so the casts
        // reinterpret nothing.
        let rhs = crate::amx::Bf16Rhs::gather(k, n, |r, col| unsafe {
            (*b_ptr.add(r * b_rows + col * b_cols)).to_f64() as f32
        });
        // SAFETY: the caller's contract; the tiles are on only where available.
        unsafe {
            rhs.multiply(
                m,
                c as *mut f32,
                c_row_stride,
                accumulate,
                a.ptr as *const f32,
                a.row_stride,
                a.col_stride,
            )
        };
        return;
    }
    // SAFETY: the caller's contract; gemm reads A and B and writes C within the shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_row_stride as isize,
            accumulate,
            a.ptr,
            a.col_stride as isize,
            a.row_stride as isize,
            b.ptr,
            b.col_stride as isize,
            b.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
