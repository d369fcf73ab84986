//! 2-D convolution on CPU as per-image im2col + GEMM, forward and both gradients, on plain
//! row-major NCHW `f32` slices (no Burn types here; [`super::ext`] wires them into Burn).
//!
//! Why our own: Burn 0.22's `flex` backend computes the weight gradient as a convolution of the
//! input (batch and channels swapped) with the output gradient used as a kernel of the size of
//! the feature map, i.e. GEMMs with 9 columns and a 9× im2col of every activation, plus four
//! layout copies. Here every product is one well-shaped GEMM per image:
//!
//! ```text
//! col_n   = im2col(x_n)                 (C·KH·KW, OH·OW)     rows are shifted input rows
//! y_n     = W · col_n                   (O, OH·OW)           forward
//! dW     += dy_n · col_nᵀ               (O, C·KH·KW)         weight gradient
//! dx_n    = col2im(Wᵀ · dy_n)           (C, H, W)            input gradient
//! ```
//!
//! The batch is cut into one run of images per thread (each with its own column buffer and,
//! for dW, its own accumulator). Small feature maps put several images side by side in one
//! `col` so that each GEMM keeps a few hundred columns; a 1×1 stride-1 convolution of a single
//! image uses the input itself as `col`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::matmul::{gemm, gemm_transposed_dst, gemm_uninit};
use super::uninit;

/// Shapes of a convolution (groups 1, dilation 1, symmetric zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad[0] - self.kh) / self.stride[0] + 1,
            (self.w + 2 * self.pad[1] - self.kw) / self.stride[1] + 1,
        )
    }
    /// Output positions per image.
    fn l(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }
    /// Rows of `col`: C·KH·KW.
    fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// The input is its own `col`.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.o * self.ck()
    }
    pub fn y_len(&self) -> usize {
        self.n * self.o * self.l()
    }
}

/// `x_n (C, H, W)` → columns `[off, off + OH·OW)` of `col (C·KH·KW, ld)`.
fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32], ld: usize, off: usize) {
    let (oh, ow) = g.out_hw();
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * ld + off..row * ld + off + oh * ow];
                let (ox_lo, ox_hi) = valid_columns(g, kj);
                for oy in 0..oh {
                    let out = &mut dst[oy * ow..(oy + 1) * ow];
                    let iy = (oy * sh + ki) as isize - ph as isize;
                    if iy < 0 || iy >= g.h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    out[..ox_lo].fill(0.0);
                    out[ox_hi..].fill(0.0);
                    let ix0 = ox_lo * sw + kj - pw;
                    if sw == 1 {
                        out[ox_lo..ox_hi].copy_from_slice(&src[ix0..ix0 + (ox_hi - ox_lo)]);
                    } else {
                        for (k, v) in out[ox_lo..ox_hi].iter_mut().enumerate() {
                            *v = src[ix0 + k * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Output columns `[lo, hi)` whose input column `ox·sw + kj − pw` is inside the image.
fn valid_columns(g: &ConvGeom, kj: usize) -> (usize, usize) {
    let (_, ow) = g.out_hw();
    let (sw, pw) = (g.stride[1], g.pad[1]);
    let lo = pw.saturating_sub(kj).div_ceil(sw).min(ow);
    let hi = if g.w + pw > kj {
        ((g.w + pw - kj - 1) / sw + 1).min(ow)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Columns `[off, off + OH·OW)` of `col (C·KH·KW, ld)` → added into `dx_n (C, H, W)`.
fn col2im(col: &[f32], g: &ConvGeom, dx: &mut [f32], ld: usize, off: usize) {
    let (oh, ow) = g.out_hw();
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &col[row * ld + off..row * ld + off + oh * ow];
                let (ox_lo, ox_hi) = valid_columns(g, kj);
                for oy in 0..oh {
                    let iy = (oy * sh + ki) as isize - ph as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let s = &src[oy * ow + ox_lo..oy * ow + ox_hi];
                    let ix0 = ox_lo * sw + kj - pw;
                    if sw == 1 {
                        for (d, v) in dst[ix0..ix0 + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (k, v) in s.iter().enumerate() {
                            dst[ix0 + k * sw] += v;
                        }
                    }
                }
            }
        }
    }
}

/// How the batch is cut: `groups` images share one GEMM (so that small feature maps still give
/// GEMMs with a few hundred columns), and `per_thread` consecutive images go to one rayon task.
struct Plan {
    group: usize,
    per_thread: usize,
    /// GEMMs themselves run on all threads (when the batch is too small to split).
    gemm_parallel: bool,
}

fn plan(g: &ConvGeom) -> Plan {
    let l = g.l().max(1);
    let group = 256usize.div_ceil(l).clamp(1, g.n.max(1));
    let threads = rayon::current_num_threads();
    if g.n >= 2 * threads * group || (group > 1 && g.n >= threads * group) {
        Plan {
            group,
            per_thread: g.n.div_ceil(threads),
            gemm_parallel: false,
        }
    } else {
        Plan {
            group,
            per_thread: g.n.max(1),
            gemm_parallel: true,
        }
    }
}

/// Copies rows of `src_n (rows, L)` into columns `[off, off + L)` of `dst (rows, ld)`.
fn gather_rows(src: &[f32], rows: usize, l: usize, dst: &mut [f32], ld: usize, off: usize) {
    for r in 0..rows {
        dst[r * ld + off..r * ld + off + l].copy_from_slice(&src[r * l..(r + 1) * l]);
    }
}

/// The output gradients of `gn` images `(gn, rows, L)` as one `(rows, gn·L)` matrix: the
/// images themselves for one image, else gathered into `buf`.
fn group_rows<'a>(
    src: &'a [f32],
    rows: usize,
    l: usize,
    gn: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    if gn == 1 {
        return src;
    }
    buf.resize(rows * gn * l, 0.0);
    for i in 0..gn {
        gather_rows(
            &src[i * rows * l..(i + 1) * rows * l],
            rows,
            l,
            buf,
            gn * l,
            i * l,
        );
    }
    buf
}

/// The inverse of [`gather_rows`], into an output not yet written.
fn scatter_rows(
    src: &[f32],
    rows: usize,
    l: usize,
    dst: &mut [MaybeUninit<f32>],
    ld: usize,
    off: usize,
) {
    for r in 0..rows {
        uninit::copy(
            &mut dst[r * l..(r + 1) * l],
            &src[r * ld + off..r * ld + off + l],
        );
    }
}

/// `y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C, KH, KW))`.
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(x.len(), g.x_len(), "conv2d input");
    assert_eq!(w.len(), g.w_len(), "conv2d weight");
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let p = plan(g);
    let task = |xs: &[f32], ys: &mut [MaybeUninit<f32>]| {
        let images = xs.len() / chw;
        let (mut col, mut out) = (Vec::new(), Vec::new());
        for start in (0..images).step_by(p.group) {
            let gn = p.group.min(images - start);
            let ld = gn * l;
            let x_g = &xs[start * chw..(start + gn) * chw];
            let y_g = &mut ys[start * g.o * l..(start + gn) * g.o * l];
            if gn == 1 && g.is_pointwise() {
                gemm_uninit((g.o, l, ck), y_g, (w, 1, ck), (x_g, 1, l), p.gemm_parallel);
                continue;
            }
            col.resize(ck * ld, 0.0);
            for i in 0..gn {
                im2col(&x_g[i * chw..(i + 1) * chw], g, &mut col, ld, i * l);
            }
            if gn == 1 {
                gemm_uninit((g.o, l, ck), y_g, (w, 1, ck), (&col, 1, l), p.gemm_parallel);
            } else {
                out.resize(g.o * ld, 0.0);
                gemm(
                    g.o,
                    ld,
                    ck,
                    &mut out,
                    false,
                    w,
                    1,
                    ck,
                    &col,
                    1,
                    ld,
                    p.gemm_parallel,
                );
                for i in 0..gn {
                    scatter_rows(&out, g.o, l, &mut y_g[i * g.o * l..], ld, i * l);
                }
            }
        }
    };
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(p.per_thread * g.o * l)
            .zip(x.par_chunks(p.per_thread * chw))
            .for_each(|(ys, xs)| task(xs, ys))
    };
    // SAFETY: the runs of images cover the batch, and for each image every (o, position) is
    // written: by the product (`gemm_uninit`) or copied from the grouped product's rows
    unsafe { uninit::written(g.y_len(), fill) }
}

/// Gradient of the weight: `dW = Σ_n dy_n · im2col(x_n)ᵀ`, shape `(O, C, KH, KW)`.
///
/// Up to 128 output channels the product is accumulated as `dWᵀ (C·KH·KW, O)` and transposed
/// at the end: the `gemm` crate then reads the im2col matrix where it lies and packs only `dy`,
/// instead of copying the whole im2col matrix into panels (it orients every product by its
/// destination). Per layer (example `conv_layers`, batch 64): 32→32 @32² 100 → 220 GFLOP/s,
/// 64→64 @16² 171 → 260, 128→128 @8² 200 → 235; with 256 output channels the other way is
/// faster (≈ 205 against 175).
pub fn grad_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(x.len(), g.x_len(), "conv2d input");
    assert_eq!(dy.len(), g.y_len(), "conv2d output gradient");
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let p = plan(g);
    let transposed = g.o <= 128;
    let task = |xs: &[f32], dys: &[f32]| {
        let images = xs.len() / chw;
        let mut acc = vec![0.0f32; g.w_len()];
        let (mut col, mut dyg) = (Vec::new(), Vec::new());
        for start in (0..images).step_by(p.group) {
            let gn = p.group.min(images - start);
            let ld = gn * l;
            let x_g = &xs[start * chw..(start + gn) * chw];
            let dy_g = &dys[start * g.o * l..(start + gn) * g.o * l];
            let colr: &[f32] = if gn == 1 && g.is_pointwise() {
                x_g
            } else {
                col.resize(ck * ld, 0.0);
                for i in 0..gn {
                    im2col(&x_g[i * chw..(i + 1) * chw], g, &mut col, ld, i * l);
                }
                &col
            };
            let dyr = group_rows(dy_g, g.o, l, gn, &mut dyg);
            if transposed {
                // accᵀ (CK, O) += (dy_g (O, G·L) · colᵀ (G·L, CK))ᵀ
                gemm_transposed_dst(
                    (g.o, ck, ld),
                    &mut acc,
                    true,
                    (dyr, 1, ld),
                    (colr, ld, 1),
                    p.gemm_parallel,
                );
            } else {
                // acc (O, CK) += dy_g (O, G·L) · colᵀ (G·L, CK)
                gemm(
                    g.o,
                    ck,
                    ld,
                    &mut acc,
                    true,
                    dyr,
                    1,
                    ld,
                    colr,
                    ld,
                    1,
                    p.gemm_parallel,
                );
            }
        }
        acc
    };
    // one accumulator per run of images, summed in a fixed order: the result does not depend
    // on how rayon schedules the runs
    let parts: Vec<Vec<f32>> = dy
        .par_chunks(p.per_thread * g.o * l)
        .zip(x.par_chunks(p.per_thread * chw))
        .map(|(dys, xs)| task(xs, dys))
        .collect();
    let mut parts = parts.into_iter();
    let mut acc = parts.next().unwrap_or_else(|| vec![0.0; g.w_len()]);
    for part in parts {
        acc.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    if !transposed {
        return acc;
    }
    // (CK, O) → (O, CK)
    let mut dw = vec![0.0f32; g.w_len()];
    for (k, row) in acc.chunks_exact(g.o).enumerate() {
        for (o, v) in row.iter().enumerate() {
            dw[o * ck + k] = *v;
        }
    }
    dw
}

/// Gradient of the input: `dx_n = col2im(Wᵀ · dy_n)`, shape `(N, C, H, W)`.
pub fn grad_input(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(w.len(), g.w_len(), "conv2d weight");
    assert_eq!(dy.len(), g.y_len(), "conv2d output gradient");
    if g.stride == [1, 1] && !g.is_pointwise() && g.pad[0] < g.kh && g.pad[1] < g.kw {
        return grad_input_as_conv(w, dy, g);
    }
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let p = plan(g);
    let mut dx = vec![0.0f32; g.x_len()];
    let task = |dys: &[f32], dxs: &mut [f32]| {
        let images = dxs.len() / chw;
        let (mut col, mut dyg) = (Vec::new(), Vec::new());
        for start in (0..images).step_by(p.group) {
            let gn = p.group.min(images - start);
            let ld = gn * l;
            let dy_g = &dys[start * g.o * l..(start + gn) * g.o * l];
            let dx_g = &mut dxs[start * chw..(start + gn) * chw];
            if gn == 1 && g.is_pointwise() {
                // dx_n (C, L) = Wᵀ (C, O) · dy_n (O, L)
                gemm(
                    ck,
                    l,
                    g.o,
                    dx_g,
                    false,
                    w,
                    ck,
                    1,
                    dy_g,
                    1,
                    l,
                    p.gemm_parallel,
                );
                continue;
            }
            let dyr = group_rows(dy_g, g.o, l, gn, &mut dyg);
            col.resize(ck * ld, 0.0);
            gemm(
                ck,
                ld,
                g.o,
                &mut col,
                false,
                w,
                ck,
                1,
                dyr,
                1,
                ld,
                p.gemm_parallel,
            );
            for i in 0..gn {
                col2im(&col, g, &mut dx_g[i * chw..(i + 1) * chw], ld, i * l);
            }
        }
    };
    dx.par_chunks_mut(p.per_thread * chw)
        .zip(dy.par_chunks(p.per_thread * g.o * l))
        .for_each(|(dxs, dys)| task(dys, dxs));
    dx
}

/// For stride 1 the input gradient is itself a convolution: of `dy` with the weights flipped in
/// space and with input and output channels swapped, padded by `k − 1 − p`. That turns the
/// GEMM of depth O followed by a col2im scatter into a GEMM of depth O·KH·KW after an im2col
/// copy, which runs near the GEMM peak (see the `conv_layers` example).
fn grad_input_as_conv(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (flipped, t) = flipped_conv(w, g);
    forward(dy, &flipped, &t)
}

/// The convolution whose forward pass on `dy` is the input gradient of a stride-1 convolution
/// `g` with weights `w`: the weights flipped in space with input and output channels swapped,
/// and its shapes (input `dy`'s, output `x`'s, padding `k − 1 − p`).
pub(crate) fn flipped_conv(w: &[f32], g: &ConvGeom) -> (Vec<f32>, ConvGeom) {
    debug_assert_eq!(g.stride, [1, 1], "flipped_conv: stride 1 only");
    let (oh, ow) = g.out_hw();
    let (kh, kw) = (g.kh, g.kw);
    let mut flipped = vec![0.0f32; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[((c * g.o + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                        w[((o * g.c + c) * kh + i) * kw + j];
                }
            }
        }
    }
    let t = ConvGeom {
        n: g.n,
        c: g.o,
        h: oh,
        w: ow,
        o: g.c,
        kh,
        kw,
        stride: [1, 1],
        pad: [kh - 1 - g.pad[0], kw - 1 - g.pad[1]],
    };
    debug_assert_eq!(t.out_hw(), (g.h, g.w));
    (flipped, t)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Direct float64 convolution, written from the definition (also the Winograd tests').
    pub(in crate::kernels) fn naive(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f64> {
        let (oh, ow) = g.out_hw();
        let mut y = vec![0.0f64; g.n * g.o * oh * ow];
        for n in 0..g.n {
            for o in 0..g.o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0.0f64;
                        for c in 0..g.c {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ki) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kj) as isize - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = w[((o * g.c + c) * g.kh + ki) * g.kw + kj];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * g.o + o) * oh + oy) * ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::testutil::Rng(seed);
        (0..n).map(|_| r.uniform() as f32).collect()
    }

    fn geoms() -> Vec<ConvGeom> {
        let g = |n, c, h, w, o, k, s, p| ConvGeom {
            n,
            c,
            h,
            w,
            o,
            kh: k,
            kw: k,
            stride: [s, s],
            pad: [p, p],
        };
        vec![
            g(2, 3, 7, 6, 4, 3, 1, 1),   // 3×3 same
            g(5, 2, 8, 8, 3, 3, 2, 1),   // 3×3 stride 2
            g(4, 3, 5, 5, 2, 1, 1, 0),   // pointwise
            g(4, 3, 7, 7, 2, 1, 2, 0),   // 1×1 stride 2 (shortcut)
            g(1, 2, 9, 9, 3, 7, 2, 3),   // 7×7 stride 2 stem, one image
            g(6, 1, 4, 4, 2, 3, 1, 0),   // valid
            g(9, 3, 4, 4, 5, 3, 1, 1),   // small maps: images grouped per GEMM, odd count
            g(9, 4, 4, 4, 3, 1, 1, 0),   // pointwise, grouped
            g(2, 2, 4, 4, 130, 3, 1, 1), // > 128 outputs: dW accumulated as (O, CK), not transposed
        ]
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (*x as f64 - y).abs() <= tol * (1.0 + y.abs()),
                "[{i}] {x} vs {y}"
            );
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geoms() {
            let x = rand(g.x_len(), 1);
            let w = rand(g.w_len(), 2);
            close(&forward(&x, &w, &g), &naive(&x, &w, &g), 1e-5);
        }
    }

    /// <dy, conv(x, w)> is bilinear: its gradients are the adjoints. Checked against the naive
    /// convolution by perturbing one basis direction at a time (exact, since it is linear).
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        for g in geoms() {
            let x = rand(g.x_len(), 3);
            let w = rand(g.w_len(), 4);
            let dy = rand(g.y_len(), 5);
            let dot = |x: &[f32], w: &[f32]| -> f64 {
                naive(x, w, &g)
                    .iter()
                    .zip(&dy)
                    .map(|(a, b)| a * *b as f64)
                    .sum()
            };
            let gw = grad_weight(&x, &dy, &g);
            let gx = grad_input(&w, &dy, &g);
            let mut e = vec![0.0f32; g.w_len()];
            let gw_ref: Vec<f64> = (0..g.w_len())
                .map(|i| {
                    e[i] = 1.0;
                    let v = dot(&x, &e);
                    e[i] = 0.0;
                    v
                })
                .collect();
            close(&gw, &gw_ref, 1e-5);
            let mut e = vec![0.0f32; g.x_len()];
            let gx_ref: Vec<f64> = (0..g.x_len())
                .map(|i| {
                    e[i] = 1.0;
                    let v = dot(&e, &w);
                    e[i] = 0.0;
                    v
                })
                .collect();
            close(&gx, &gx_ref, 1e-5);
        }
    }
}
