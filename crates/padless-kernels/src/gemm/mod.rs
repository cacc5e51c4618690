//! Matrix products: [`matmul`] on strided buffers (through the `gemm` crate), [`PackedRhs`]
//! for the per-step products by a matrix packed once per call, and the opt-in bfloat16
//! products ([`bf16`]).

pub(crate) mod bf16;
pub(crate) mod packed;

pub(crate) use packed::PackedRhs;

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
    if crate::gemm::bf16::bf16_path::<T>() {
        // SAFETY: the caller's contract.
        let rhs = unsafe { bf16_rhs(k, n, b) };
        // SAFETY: the caller's contract; the tiles are on only where available.
        unsafe { bf16_multiply(&rhs, m, c, c_row_stride, accumulate, a) };
        return;
    }
    // SAFETY: the caller's contract; gemm reads A and B and writes C within the shapes.
    unsafe {
        ::gemm::gemm(
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
            ::gemm::Parallelism::None,
        );
    }
}

/// `C_i[m_i, n] = A_i[m_i, k] · B[k, n]` for two products by the same `B` (the weight
/// gradients `h_prev^T · d_gates` and `inputs^T · d_gates`): as two [`matmul`] calls, except
/// that with the bfloat16 products on `B` is rounded and laid out once for both.
///
/// # Safety
/// As [`matmul`], for both products.
pub(crate) unsafe fn matmul_shared_rhs<T: Real>(
    n: usize,
    k: usize,
    b: View<T>,
    products: [(usize, *mut T, usize, View<T>); 2],
) {
    if crate::gemm::bf16::bf16_path::<T>() && k > 0 {
        // SAFETY: the caller's contract.
        let rhs = unsafe { bf16_rhs(k, n, b) };
        for (m, c, c_row_stride, a) in products {
            // SAFETY: the caller's contract; the tiles are on only where available.
            unsafe { bf16_multiply(&rhs, m, c, c_row_stride, false, a) };
        }
        return;
    }
    for (m, c, c_row_stride, a) in products {
        // SAFETY: the caller's contract.
        unsafe { matmul(m, n, k, c, c_row_stride, false, a, b) };
    }
}

/// `B[k, n]` in the tiles' layout.
///
/// # Safety
/// `B`'s elements inside a live buffer; `T` is `f32` ([`crate::gemm::bf16::bf16_path`]).
unsafe fn bf16_rhs<T: Real>(k: usize, n: usize, b: View<T>) -> crate::gemm::bf16::Bf16Rhs {
    let rows: Vec<usize> = (0..k).map(|r| r * b.row_stride).collect();
    let cols: Vec<usize> = (0..n).map(|c| c * b.col_stride).collect();
    let extent = if k == 0 || n == 0 {
        0
    } else {
        (k - 1) * b.row_stride + (n - 1) * b.col_stride + 1
    };
    // SAFETY: B's elements lie inside `extent` floats from its pointer by the caller's
    // contract; T is f32, so the cast reinterprets nothing.
    let b_values = unsafe { std::slice::from_raw_parts(b.ptr.cast::<f32>(), extent) };
    crate::gemm::bf16::Bf16Rhs::from_offsets(b_values, &rows, &cols)
}

/// `C (+)= A · rhs` on the tiles.
///
/// # Safety
/// As [`matmul`]; `T` is `f32` and the tiles are available.
unsafe fn bf16_multiply<T: Real>(
    rhs: &crate::gemm::bf16::Bf16Rhs,
    m: usize,
    c: *mut T,
    c_row_stride: usize,
    accumulate: bool,
    a: View<T>,
) {
    // SAFETY: the caller's contract; T is f32, so the casts reinterpret nothing.
    unsafe {
        rhs.multiply(
            crate::gemm::bf16::Unit::chosen(),
            m,
            c as *mut f32,
            c_row_stride,
            accumulate,
            a.ptr as *const f32,
            a.row_stride,
            a.col_stride,
        )
    };
}
