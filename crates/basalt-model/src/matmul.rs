//! Matrix products for the native encoder: a bounds-checked, safe front for the `gemm` crate,
//! whose runtime-dispatched kernels (AVX2/FMA, AVX-512) do the arithmetic.
//!
//! This is the only module of Basalt that contains `unsafe`: `gemm` takes raw pointers and
//! strides, and every view is checked against its slice here before one is handed over.

/// A read-only matrix view: element `(row, col)` is `data[row * row_stride + col * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable matrix view with the same addressing as [`MatRef`].
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Index one past the last element a view addresses; panics on overflow or out-of-bounds, which
/// is a bug in the caller's shapes, never a property of the input text.
fn checked_extent(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|offset| offset.checked_add((cols - 1).checked_mul(col_stride)?))
        .expect("matrix view offset overflows");
    assert!(
        last < len,
        "matrix view ({rows}x{cols}) exceeds its slice of {len} elements"
    );
    assert!(
        isize::try_from(row_stride).is_ok() && isize::try_from(col_stride).is_ok(),
        "matrix stride too large"
    );
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix whose rows are `row_stride` elements apart.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self::strided(data, rows, cols, row_stride, 1)
    }

    pub(crate) fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        checked_extent(data.len(), rows, cols, row_stride, col_stride);
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, as a view of the same memory.
    pub(crate) fn transposed(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl<'a> MatMut<'a> {
    pub(crate) fn rows(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        checked_extent(data.len(), rows, cols, row_stride, 1);
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }
}

/// How many threads one product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// The calling thread only.
    One,
    /// Up to this many threads of the current rayon pool.
    Pool(usize),
}

/// `dst = scale * lhs * rhs`, or `dst += scale * lhs * rhs` with `accumulate`.
pub(crate) fn matmul(
    dst: &mut MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    threads: Threads,
) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert_eq!(
        (dst.rows, dst.cols),
        (lhs.rows, rhs.cols),
        "output shape differs"
    );
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                for col in 0..n {
                    dst.data[row * dst.row_stride + col * dst.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::One | Threads::Pool(0 | 1) => gemm::Parallelism::None,
        Threads::Pool(count) => gemm::Parallelism::Rayon(count),
    };
    // Strides fit in isize: checked_extent verified that when the views were built.
    let stride = |value: usize| value as isize;
    #[allow(unsafe_code)]
    // SAFETY: every view was checked by `checked_extent` to address only elements inside its
    // own slice, the shapes agree (asserted above), and `dst` is a unique borrow, so it cannot
    // overlap `lhs` or `rhs`. `gemm` reads `dst` only when `read_dst` is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            stride(dst.col_stride),
            stride(dst.row_stride),
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let expected = naive(&a, &b, m, k, n);

        let mut c = vec![0.0; m * n];
        matmul(
            &mut MatMut::rows(&mut c, m, n, n),
            MatRef::rows(&a, m, k, k),
            MatRef::rows(&b, k, n, n),
            1.0,
            false,
            Threads::Pool(2),
        );
        for (got, want) in c.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }

        // b stored transposed (n × k), read through a transposed view, added twice at half scale.
        let mut bt = vec![0.0; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let mut c = vec![0.0; m * n];
        for _ in 0..2 {
            matmul(
                &mut MatMut::rows(&mut c, m, n, n),
                MatRef::rows(&a, m, k, k),
                MatRef::rows(&bt, n, k, k).transposed(),
                0.5,
                true,
                Threads::One,
            );
        }
        for (got, want) in c.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
    }

    #[test]
    #[should_panic(expected = "exceeds its slice")]
    fn a_view_past_its_slice_is_refused() {
        let data = vec![0.0; 10];
        let _ = MatRef::rows(&data, 3, 4, 4);
    }
}
