//! Matrix products: [`matmul`] on strided buffers, [`PackedRhs`] for the per-step products
//! by a matrix packed once per call. `f32` products run on the instruction set's microkernel
//! ([`panels`]: [`avx512`], [`avx2`]; the large products of [`matmul`] on AVX2 only,
//! [`blocked`]), the others through the `gemm` crate (`f64`, [`crate::Isa::Portable`], the
//! large products on AVX-512), or on the opt-in bfloat16 units ([`bf16`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod bf16;
mod blocked;
mod packed;
mod panels;

pub(crate) use packed::PackedRhs;

use crate::real::Real;
use panels::Kernel;

/// A strided matrix operand: element `(r, c)` is at `ptr + r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct View<T> {
    pub ptr: *const T,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<T> View<T> {
    /// The same view of the same memory as elements of `U`.
    fn cast<U>(self) -> View<U> {
        View {
            ptr: self.ptr.cast(),
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

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
    if let Some(kernel) = Kernel::for_type::<T>().filter(|k| k.runs_large_products()) {
        // SAFETY: the caller's contract; a kernel exists for f32 only, so the casts
        // reinterpret nothing.
        unsafe {
            blocked::matmul(
                kernel,
                m,
                n,
                k,
                c.cast(),
                c_row_stride,
                accumulate,
                a.cast(),
                b.cast(),
            )
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with no pattern a wrong index could reproduce, in [-0.5, 0.5).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5)
            .collect()
    }

    /// A `rows x cols` matrix stored row-major, or transposed (column-major).
    struct Stored {
        data: Vec<f32>,
        transposed: bool,
        rows: usize,
        cols: usize,
    }

    impl Stored {
        fn new(rows: usize, cols: usize, transposed: bool, seed: usize) -> Self {
            Stored {
                data: values(rows * cols, seed),
                transposed,
                rows,
                cols,
            }
        }

        fn get(&self, r: usize, c: usize) -> f64 {
            let i = if self.transposed {
                c * self.rows + r
            } else {
                r * self.cols + c
            };
            f64::from(self.data[i])
        }

        fn view(&self) -> View<f32> {
            if self.transposed {
                View::transposed(self.data.as_ptr(), self.rows)
            } else {
                View::rows(self.data.as_ptr(), self.cols)
            }
        }
    }

    /// On each instruction set, against the f64 triple loop: shapes with several and partial
    /// blocks of rows (96) and of terms (256), both operands row-major or transposed, C
    /// written and accumulated, its columns past `n` untouched.
    #[test]
    fn products_equal_the_triple_loop_across_blocks_and_layouts() {
        crate::isa::for_each_available(|isa| {
            for &(m, n, k) in &[(1, 1, 1), (100, 37, 600), (3, 50, 257), (130, 70, 33)] {
                for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a = Stored::new(m, k, a_t, 1);
                    let b = Stored::new(k, n, b_t, 2);
                    let ldc = n + 3;
                    let start = values(m * ldc, 3);
                    for accumulate in [false, true] {
                        let mut c = start.clone();
                        // SAFETY: C holds `m` rows of `ldc >= n`; A and B hold their shapes.
                        unsafe {
                            matmul(m, n, k, c.as_mut_ptr(), ldc, accumulate, a.view(), b.view())
                        };
                        for r in 0..m {
                            for col in 0..ldc {
                                let base = f64::from(start[r * ldc + col]);
                                let want = if col >= n {
                                    base
                                } else {
                                    let sum: f64 =
                                        (0..k).map(|i| a.get(r, i) * b.get(i, col)).sum();
                                    if accumulate { base + sum } else { sum }
                                };
                                let got = f64::from(c[r * ldc + col]);
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{isa} m={m} n={n} k={k} a_t={a_t} b_t={b_t} \
                                     acc={accumulate} ({r},{col}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        });
    }

    /// On the blocked microkernel path, a product split by rows or by columns (as the thread
    /// pair splits the kernels' products) gives the whole product's elements bit for bit.
    #[test]
    fn split_products_sum_in_the_order_of_the_whole() {
        crate::isa::for_each_available(|isa| {
            if !Kernel::for_type::<f32>().is_some_and(Kernel::runs_large_products) {
                return;
            }
            let (m, n, k) = (101, 45, 530);
            let (a, b) = (Stored::new(m, k, true, 4), Stored::new(k, n, false, 5));
            let mut whole = vec![0.0f32; m * n];
            // SAFETY: C is `m x n`; A and B hold their shapes.
            unsafe { matmul(m, n, k, whole.as_mut_ptr(), n, false, a.view(), b.view()) };
            let mut parts = vec![0.0f32; m * n];
            // Rows 0..37 whole; rows 37..m in the columns 0..20 and 20..n.
            for (r0, r1, c0, c1) in [(0, 37, 0, n), (37, m, 0, 20), (37, m, 20, n)] {
                let a_part = View {
                    ptr: a.data[r0..].as_ptr(),
                    ..a.view()
                };
                let b_part = View {
                    ptr: b.data[c0..].as_ptr(),
                    ..b.view()
                };
                // SAFETY: rows `r0..r1`, columns `c0..c1` of C; the parts lie inside A and B.
                unsafe {
                    matmul(
                        r1 - r0,
                        c1 - c0,
                        k,
                        parts[r0 * n + c0..].as_mut_ptr(),
                        n,
                        false,
                        a_part,
                        b_part,
                    )
                };
            }
            assert!(
                whole == parts,
                "{isa}: split products differ from the whole"
            );
        });
    }
}
