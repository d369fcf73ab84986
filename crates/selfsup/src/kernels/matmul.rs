//! Matrix products through the `gemm` crate, and the fully connected layer built on them.
//!
//! Burn's `Linear` on `flex` is a matrix product into a fresh output (which `flex` allocates
//! zeroed and then copies into an aligned buffer: a memset and a memcpy per product), a
//! broadcast bias addition, and, backward, transposes and a reduction — 15 % of a ViT step in
//! `memset`/`memmove` alone. Here the output rows start as the bias and the product
//! accumulates onto them; the backward is two products and a column sum.
//!
//! ```text
//! y = x·W + b      dx = dy·Wᵀ      dW = xᵀ·dy      db = Σ_rows dy        W: (in, out) as in Burn
//! ```

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, strides in elements (column, row); `dst`
/// has row stride `n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    rhs_rs: usize,
    parallel: bool,
) {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `product` writes only floats
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    product(
        (m, n, k),
        dst,
        accumulate,
        (lhs, lhs_cs, lhs_rs),
        (rhs, rhs_cs, rhs_rs),
        parallel,
        false,
    );
}

/// Sets the `gemm` crate's left-operand packing thresholds to their maximum, once, before the
/// first product. After its own transposition the crate's left operand is, in a convolution, the
/// im2col matrix read column-major; by default it copies that operand into panels as soon as
/// more than 8 · 6 columns (output channels) use it, i.e. in every layer of 64 channels or more,
/// on top of the im2col copy. Read in place it measured faster: step-a +3.4 %, step-b +2.3 %,
/// step-c +2.8 % (two alternating pairs each, the same loss), the Transformer steps and kNN
/// unchanged (BENCHMARKS.md, round 2).
fn read_lhs_in_place() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(256);
        gemm::set_lhs_packing_threshold_multi_thread(256);
    });
}

/// A matrix operand: the data, its column stride and its row stride (in elements).
pub(crate) type Operand<'a> = (&'a [f32], usize, usize);

/// [`gemm`] into a destination not yet written: `dst (m, n) = lhs · rhs`, every element of
/// `dst` written (the product never reads it).
pub(crate) fn gemm_uninit(
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    lhs: Operand,
    rhs: Operand,
    parallel: bool,
) {
    product((m, n, k), dst, false, lhs, rhs, parallel, false);
}

/// [`gemm`] into a destination stored column-major: `dst` holds `(lhs · rhs)ᵀ (n, m)`
/// row-major, `[+]=` as in [`gemm`].
pub(crate) fn gemm_transposed_dst(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    parallel: bool,
) {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `product` writes only floats
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    product((m, n, k), dst, accumulate, lhs, rhs, parallel, true);
}

/// The product of [`gemm`], [`gemm_uninit`] and [`gemm_transposed_dst`]: reads `dst` only when
/// `accumulate`; `dst` row-major `(m, n)`, or column-major (`(n, m)` row-major) with
/// `dst_column_major`.
fn product(
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    accumulate: bool,
    (lhs, lhs_cs, lhs_rs): Operand,
    (rhs, rhs_cs, rhs_rs): Operand,
    parallel: bool,
    dst_column_major: bool,
) {
    assert!(dst.len() >= m * n, "gemm destination");
    read_lhs_in_place();
    let (dst_cs, dst_rs) = if dst_column_major { (m, 1) } else { (1, n) };
    if k == 0 {
        // an empty sum: `dst` stays, or becomes zero
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|d| {
                d.write(0.0);
            });
        }
        return;
    }
    assert!(m == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above show that every element addressed through (m, n, k) and the
    // strides lies inside the slices, and `dst` is a unique borrow, so it aliases no input;
    // with `read_dst = false` the product only writes `dst`, so it may be uninitialised.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `y (m, n) = x (m, k) · w (k, n) + b (n)`.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "linear: input is not (m, k)");
    assert_eq!(w.len(), k * n, "linear: weight is not (k, n)");
    assert_eq!(b.len(), n, "linear: bias is not (n)");
    let mut y = Vec::with_capacity(m * n);
    for _ in 0..m {
        y.extend_from_slice(b);
    }
    gemm(m, n, k, &mut y, true, x, 1, k, w, 1, n, true);
    y
}

/// Gradients of [`linear_forward`]: `dx (m, k)`, `dW (k, n)`, `db (n)`.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(dy.len(), m * n, "linear: output gradient is not (m, n)");
    // dx = dy · Wᵀ: Wᵀ (n, k) read from W (k, n) with swapped strides
    let mut dx = vec![0.0f32; m * k];
    gemm(m, k, n, &mut dx, false, dy, 1, n, w, n, 1, true);
    // dW = xᵀ · dy: xᵀ (k, m) read from x (m, k)
    let mut dw = vec![0.0f32; k * n];
    gemm(k, n, m, &mut dw, false, x, k, 1, dy, 1, n, true);
    // db = column sums of dy, in row blocks summed in a fixed order
    let block = 256;
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(block * n)
        .map(|rows| {
            let mut s = vec![0.0f32; n];
            for r in rows.chunks_exact(n) {
                for (a, v) in s.iter_mut().zip(r) {
                    *a += v;
                }
            }
            s
        })
        .collect();
    let mut db = vec![0.0f32; n];
    for p in partials {
        for (a, v) in db.iter_mut().zip(&p) {
            *a += v;
        }
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, numeric_grad};

    #[test]
    fn linear_matches_float64_with_gradients() {
        let (m, k, n) = (5, 4, 3);
        let mut rng = Rng(5);
        let (x, w, b, dy) = (rng.vec(m * k), rng.vec(k * n), rng.vec(n), rng.vec(m * n));
        let lin64 = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
            (0..m * n)
                .map(|i| {
                    b[i % n]
                        + (0..k)
                            .map(|t| x[i / n * k + t] * w[t * n + i % n])
                            .sum::<f64>()
                })
                .collect()
        };
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let y = linear_forward(&f(&x), &f(&w), &f(&b), m, k, n);
        assert_close(&y, &lin64(&x, &w, &b), 1e-5, "y");
        let (dx, dw, db) = linear_backward(&f(&x), &f(&w), &f(&dy), m, k, n);
        let dot = |o: Vec<f64>| o.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        assert_close(
            &dx,
            &numeric_grad(&x, |x| dot(lin64(x, &w, &b))),
            1e-4,
            "dx",
        );
        assert_close(
            &dw,
            &numeric_grad(&w, |w| dot(lin64(&x, w, &b))),
            1e-4,
            "dW",
        );
        assert_close(
            &db,
            &numeric_grad(&b, |b| dot(lin64(&x, &w, b))),
            1e-4,
            "db",
        );
    }
}
