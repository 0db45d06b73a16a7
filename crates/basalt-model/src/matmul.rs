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

/// Rows per register tile of [`matmul_few_rows`].
const TILE_ROWS: usize = 6;
/// Output columns per register tile and per packed strip: two AVX vectors of f32.
const TILE_COLS: usize = 16;

/// A weight matrix (`inputs × outputs`) packed for [`matmul_few_rows`]: strips of
/// [`TILE_COLS`] output columns, each strip `inputs × TILE_COLS` contiguous (the last one
/// zero-padded), so a product with a few rows streams the weights once, in order.
///
/// The weights are stored as bfloat16 (the top half of an f32, rounded to nearest even). A
/// single query is bound by how fast the weights stream from memory, not by arithmetic: in
/// f32, all-MiniLM-L6-v2's layers are 42 MB, more than this CPU's 32 MB L3 cache, so every
/// query read them from DRAM; in bfloat16 they are 21 MB and stay in L3 between queries.
/// Sums stay in f32. The embedding tests hold the query vectors to cosine ≥ 0.999 against
/// sentence-transformers' f32 reference.
#[derive(Debug)]
pub(crate) struct PackedWeights {
    data: Vec<u16>,
    inputs: usize,
    outputs: usize,
}

impl PackedWeights {
    /// Packs a row-major `inputs × outputs` matrix.
    pub(crate) fn pack(weight: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(weight.len(), inputs * outputs, "weight shape");
        let strips = outputs.div_ceil(TILE_COLS);
        let mut data = vec![0u16; strips * inputs * TILE_COLS];
        for input in 0..inputs {
            for output in 0..outputs {
                let (strip, lane) = (output / TILE_COLS, output % TILE_COLS);
                data[(strip * inputs + input) * TILE_COLS + lane] =
                    to_bfloat16(weight[input * outputs + output]);
            }
        }
        PackedWeights {
            data,
            inputs,
            outputs,
        }
    }
}

/// `value` rounded to the nearest bfloat16 (ties to even); NaN stays NaN.
pub(crate) fn to_bfloat16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The f32 a bfloat16 stands for (exact).
#[inline(always)]
pub(crate) fn from_bfloat16(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// `dst = bias + lhs · weights` for a few rows (one query): `lhs` is `rows × inputs`, `dst`
/// `rows × outputs`, both row-major. `gemm` packs the weights again on every call and pads the
/// rows to its 16-row kernel, which costs more than the product when there are only a few
/// rows; here the weights were packed once, at load.
pub(crate) fn matmul_few_rows(
    dst: &mut [f32],
    lhs: &[f32],
    weights: &PackedWeights,
    bias: &[f32],
    rows: usize,
    threads: Threads,
) {
    let (inputs, outputs) = (weights.inputs, weights.outputs);
    assert_eq!(lhs.len(), rows * inputs, "lhs shape");
    assert_eq!(bias.len(), outputs, "bias shape");
    assert_eq!(dst.len(), rows * outputs, "dst shape");
    if rows == 0 || outputs == 0 {
        return;
    }

    // lhs as k-major panels of TILE_ROWS rows (zero-padded), so each step reads one chunk.
    let tiles = rows.div_ceil(TILE_ROWS);
    let mut panels = vec![0.0f32; tiles * inputs * TILE_ROWS];
    for row in 0..rows {
        let (tile, lane) = (row / TILE_ROWS, row % TILE_ROWS);
        for (input, &value) in lhs[row * inputs..][..inputs].iter().enumerate() {
            panels[(tile * inputs + input) * TILE_ROWS + lane] = value;
        }
    }

    let strips = outputs.div_ceil(TILE_COLS);
    let tasks = match threads {
        Threads::One => 1,
        Threads::Pool(count) => count.clamp(1, strips),
    };
    let strips_per_task = strips.div_ceil(tasks);
    // One task: `rows × (its strips · TILE_COLS)` outputs, bias not yet added.
    let run_task = |task: usize| -> Vec<f32> {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                let first = task * strips_per_task;
                let last = (first + strips_per_task).min(strips);
                let width = (last - first) * TILE_COLS;
                let mut block = vec![0.0f32; tiles * TILE_ROWS * width];
                for strip in first..last {
                    let packed = &weights.data[strip * inputs * TILE_COLS..][..inputs * TILE_COLS];
                    let (packed, _) = packed.as_chunks::<TILE_COLS>();
                    for tile in 0..tiles {
                        let panel = &panels[tile * inputs * TILE_ROWS..][..inputs * TILE_ROWS];
                        let (panel, _) = panel.as_chunks::<TILE_ROWS>();
                        let mut sums = [[0.0f32; TILE_COLS]; TILE_ROWS];
                        for (column_halves, row_values) in packed.iter().zip(panel) {
                            let column_values = column_halves.map(from_bfloat16);
                            for (row_sums, &value) in sums.iter_mut().zip(row_values) {
                                for (sum, &weight) in row_sums.iter_mut().zip(&column_values) {
                                    *sum = multiply_add(value, weight, *sum);
                                }
                            }
                        }
                        for (lane, row_sums) in sums.iter().enumerate() {
                            let at =
                                (tile * TILE_ROWS + lane) * width + (strip - first) * TILE_COLS;
                            block[at..at + TILE_COLS].copy_from_slice(row_sums);
                        }
                    }
                }
                block
            },
        )
    };
    let blocks: Vec<Vec<f32>> = if tasks == 1 {
        vec![run_task(0)]
    } else {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().map(run_task).collect()
    };
    for (task, block) in blocks.iter().enumerate() {
        let column_start = task * strips_per_task * TILE_COLS;
        if column_start >= outputs {
            continue;
        }
        let width = block.len() / (tiles * TILE_ROWS);
        let used = width.min(outputs - column_start);
        for row in 0..rows {
            let out = &mut dst[row * outputs + column_start..][..used];
            let sums = &block[row * width..][..used];
            for ((out, sum), bias) in out.iter_mut().zip(sums).zip(&bias[column_start..]) {
                *out = sum + bias;
            }
        }
    }
}

/// `a * b + c`, fused where the target has FMA (where it has not, `mul_add` would be a slow
/// libm call, so the product and sum stay separate).
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_rows_product_matches_naive_product_for_ragged_shapes() {
        for (rows, inputs, outputs) in [
            (1, 5, 3),
            (7, 13, 37),
            (19, 40, 64),
            (6, 16, 16),
            (2, 8, 100),
            (0, 4, 4),
            (3, 4, 0),
        ] {
            let a: Vec<f32> = (0..rows * inputs)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let w: Vec<f32> = (0..inputs * outputs)
                .map(|i| (i as f32 * 0.11).cos())
                .collect();
            let bias: Vec<f32> = (0..outputs).map(|i| i as f32 * 0.5).collect();
            // The packed weights are bfloat16: the reference multiplies by the same values.
            let rounded: Vec<f32> = w.iter().map(|&v| from_bfloat16(to_bfloat16(v))).collect();
            let mut expected = naive(&a, &rounded, rows, inputs, outputs);
            for (index, value) in expected.iter_mut().enumerate() {
                *value += bias[index % outputs];
            }
            let packed = PackedWeights::pack(&w, inputs, outputs);
            for threads in [Threads::One, Threads::Pool(2), Threads::Pool(3)] {
                let mut got = vec![f32::NAN; rows * outputs];
                matmul_few_rows(&mut got, &a, &packed, &bias, rows, threads);
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (g - e).abs() < 1e-4,
                        "{rows}x{inputs}x{outputs}: {g} vs {e}"
                    );
                }
            }
        }
    }

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
    fn bfloat16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(to_bfloat16(1.0), 0x3f80);
        assert_eq!(from_bfloat16(to_bfloat16(-2.5)), -2.5);
        // 1 + 2^-8 is halfway between 1 and the next bfloat16 (1 + 2^-7): ties go to even.
        assert_eq!(to_bfloat16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bfloat16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert!(from_bfloat16(to_bfloat16(f32::NAN)).is_nan());
        for value in [0.1f32, -0.037, 3.3e-5, 12.75] {
            let back = from_bfloat16(to_bfloat16(value));
            assert!(
                ((back - value) / value).abs() <= 2f32.powi(-8),
                "{value} -> {back}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "exceeds its slice")]
    fn a_view_past_its_slice_is_refused() {
        let data = vec![0.0; 10];
        let _ = MatRef::rows(&data, 3, 4, 4);
    }
}
