//! Winograd F(2×2, 3×3) convolution (Lavin & Gray, 2016) for 3×3 stride-1 convolutions, on
//! plain row-major NCHW `f32` slices like [`super::conv2d`]: 16 multiplications per 2×2 output
//! tile and input channel instead of 36, i.e. 2.25× fewer, done as 16 GEMMs over transformed
//! tiles.
//!
//! ```text
//! U[ξ] = (G g Gᵀ)[ξ]      per (out, in) channel pair        (16, O, C)
//! V[ξ] = (Bᵀ d B)[ξ]      per 4×4 input tile d (stride 2)   (16, C, tiles)
//! M[ξ] = U[ξ] · V[ξ]      16 GEMMs                          (16, O, tiles)
//! y    = Aᵀ M A           per tile: its 2×2 outputs
//! dU[ξ] = Σ_tiles (A dY Aᵀ)[ξ] · V[ξ]ᵀ,   dW = Gᵀ dU G      (weight gradient)
//! ```
//!
//! The forward pass works on blocks of tiles small enough to stay in the L2 cache (transformed,
//! multiplied and transformed back in turn), the transforms across a tile row's tiles in
//! vector lanes; the input gradient is the forward pass on flipped weights. The training step
//! takes these where they measured faster than im2col ([`chosen`],
//! [`chosen_for_weight_gradient`]); tested against float64 direct convolutions (max error
//! ≤ 1e-5 of the largest output) and against the im2col path.

// the transforms index their 4×4 matrices as the paper writes them
#![allow(clippy::needless_range_loop)]

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv2d::ConvGeom;
use super::matmul::{gemm, gemm_transposed_dst};
use super::{simd, uninit};

/// Whether a convolution is one this module computes: 3×3, stride 1.
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == [1, 1]
}

/// Whether the training step computes `g`'s forward pass and input gradient here rather than
/// by im2col: 3×3 stride-1 layers with even output sides (the blocked path of [`forward`]) and
/// at least [`MIN_CHANNELS`] input and output channels. `SELFSUP_WINOGRAD=0` turns it off.
///
/// Measured per layer (example `conv_layers`, 2 threads, GFLOP/s of the direct convolution's
/// FLOPs, forward / input gradient, im2col → Winograd): batch 128, ResNet-18 widths: 64→64 @32²
/// 208 → 255 / 204 → 253, 128→128 @16² 253 → 374 / 248 → 372, 256→256 @8² 260 → 399 /
/// 246 → 381, 512→512 @4² 269 → 381 / 224 → 297; batch 64, half widths: 32→32 @32²
/// 206 → 166 (slower: the transforms cost as much as the GEMMs save), 64→64 @16² 224 → 243,
/// 128→128 @8² 217 → 280; 3 input channels 210 → 58.
pub fn chosen(g: &ConvGeom) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("SELFSUP_WINOGRAD").map_or(true, |v| v != "0"));
    on && chosen_shape(g) && g.c >= MIN_CHANNELS && g.o >= MIN_CHANNELS
}

/// Whether the training step computes `g`'s weight gradient by [`grad_weight`]: as [`chosen`],
/// with 128 to 256 output channels, at least 128 input channels and output rows of at least 8
/// (4 tiles).
///
/// Measured per layer (`conv_layers`, GFLOP/s, im2col → Winograd, blocks of 128 tiles): batch
/// 128: 64→64 @32² 241 → 235, 128→128 @16² 257 → 296, 256→256 @8² 222 → 285, 512→512 @4²
/// 243 → 126 (accumulated untransposed: 230–247); batch 64: 128→128 @8² 210 → 220, 256→256
/// @4² 169 → 89 (rows of two tiles: the transforms' per-row work dominates).
pub fn chosen_for_weight_gradient(g: &ConvGeom) -> bool {
    chosen(g) && g.c >= 128 && (128..=256).contains(&g.o) && g.out_hw().1 >= 8
}

/// The fewest input and output channels for which [`chosen`] picks Winograd.
pub const MIN_CHANNELS: usize = 64;

/// `U = G g Gᵀ` of every 3×3 kernel, as `(16, O, C)`.
fn transform_weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0f32; 16 * o * c];
    for oc in 0..o * c {
        let k = &w[oc * 9..oc * 9 + 9];
        // t = G g (4×3), then t Gᵀ (4×4)
        let mut t = [[0f32; 3]; 4];
        for (i, row) in G.iter().enumerate() {
            for j in 0..3 {
                t[i][j] = row[0] * k[j] + row[1] * k[3 + j] + row[2] * k[6 + j];
            }
        }
        for i in 0..4 {
            for (j, gj) in G.iter().enumerate() {
                u[(i * 4 + j) * o * c + oc] = t[i][0] * gj[0] + t[i][1] * gj[1] + t[i][2] * gj[2];
            }
        }
    }
    u
}

/// Tiles per block of [`forward`] (the columns of its 16 GEMMs): a block's transformed input
/// and products (`16 · (C + O) · tiles` floats) stay in the L2 cache for up to ~128 channels.
const BLOCK_TILES: usize = 64;

/// The forward convolution `y (N, O, OH, OW)` of `x (N, C, H, W)` with `w (O, C, 3, 3)`,
/// stride 1, `g.pad` ≤ 2 zero padding and even output sides (every 3×3 layer of a ResNet on
/// 32², 16², 8², 4² maps): the same result as [`super::conv2d::forward`] up to float rounding.
///
/// Runs of images per task, their tiles in blocks of whole tile rows (about [`BLOCK_TILES`], of
/// one image or several), each block transformed, multiplied (16 GEMMs of `(O, C) · (C,
/// tiles)`) and transformed back while it is in cache; the transforms run across the tiles in
/// vector lanes.
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert!(
        chosen_shape(g),
        "winograd::forward: a 3×3 stride-1 convolution with even output sides, got {g:?}"
    );
    assert_eq!(x.len(), g.x_len(), "winograd::forward: input");
    assert_eq!(w.len(), g.o * g.c * 9, "winograd::forward: weights");
    let (oh, ow) = g.out_hw();
    let u = transform_weights(w, g.o, g.c);
    let (th, tw) = (oh / 2, ow / 2);
    let (chw, ohw) = (g.c * g.h * g.w, g.o * oh * ow);
    // runs of images per task; a block is `rows` tile rows, of one image or of several
    let per = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let rows = (block_tiles() / tw).clamp(1, per * th);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(per * ohw)
            .zip(x.par_chunks(per * chw))
            .for_each_init(
                || Scratch::new(g, rows * tw),
                |sc, (ys, xs)| {
                    let q_all = xs.len() / chw * th;
                    for q0 in (0..q_all).step_by(rows) {
                        let r = rows.min(q_all - q0);
                        let t = r * tw;
                        sc.transform_block(xs, g, q0, r);
                        let v = &sc.v[..16 * g.c * t];
                        // M[ξ] = U[ξ] · V[ξ]: (O, tiles)
                        let m = &mut sc.m[..16 * g.o * t];
                        for (xi, mx) in m.chunks_exact_mut(g.o * t).enumerate() {
                            let ux = &u[xi * g.o * g.c..(xi + 1) * g.o * g.c];
                            let vx = &v[xi * g.c * t..(xi + 1) * g.c * t];
                            gemm(g.o, t, g.c, mx, false, ux, 1, g.c, vx, 1, t, false);
                        }
                        for oc in 0..g.o {
                            output_transform(m, g.o * t, oc * t, t, &mut sc.tmp);
                            let k = |q: usize, dq: usize| {
                                &sc.tmp[q * t + dq * tw..q * t + (dq + 1) * tw]
                            };
                            for dq in 0..r {
                                let (img, ty) = ((q0 + dq) / th, (q0 + dq) % th);
                                let row = img * ohw + oc * oh * ow + 2 * ty * ow;
                                let (y0, y1) = ys[row..row + 2 * ow].split_at_mut(ow);
                                simd::interleave(y0, k(0, dq), k(1, dq));
                                simd::interleave(y1, k(2, dq), k(3, dq));
                            }
                        }
                    }
                },
            )
    };
    // SAFETY: one output image per input image; its tile rows cover `OH` (even) rows, and
    // each tile row writes both of its output rows whole (`2 · OW` values per channel)
    unsafe { uninit::written(g.y_len(), fill) }
}

/// [`BLOCK_TILES`], or `SELFSUP_WINOGRAD_TILES` (for measuring); read once.
fn block_tiles() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| env_usize("SELFSUP_WINOGRAD_TILES", BLOCK_TILES))
}

/// [`BLOCK_TILES_DW`], or `SELFSUP_WINOGRAD_TILES_DW` (for measuring); read once.
fn block_tiles_dw() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| env_usize("SELFSUP_WINOGRAD_TILES_DW", BLOCK_TILES_DW))
}

/// Per-task buffers of [`forward`] and [`grad_weight`].
struct Scratch {
    /// Transformed input `(16, C, tiles)` and products `(16, O, tiles)` of a block (in
    /// [`grad_weight`], the transformed output gradient).
    v: Vec<f32>,
    m: Vec<f32>,
    /// One padded input row.
    row: Vec<f32>,
    /// Per tile row of a block: its four input rows' even and odd columns.
    eo: Vec<f32>,
    /// The 16 transformed values of each tile of a block, one channel; or its four outputs.
    tmp: Vec<f32>,
}

impl Scratch {
    /// `v (16, C, r·tw)` = the transformed input of the `r` tile rows from `q0` (tile rows
    /// counted over the images of `xs`, `OH / 2` per image).
    fn transform_block(&mut self, xs: &[f32], g: &ConvGeom, q0: usize, r: usize) {
        let (oh, ow) = g.out_hw();
        let (th, tw) = (oh / 2, ow / 2);
        let (hw, t, n) = (g.h * g.w, r * tw, 8 * (tw + 1));
        let v = &mut self.v[..16 * g.c * t];
        for ch in 0..g.c {
            for dq in 0..r {
                let (img, ty) = ((q0 + dq) / th, (q0 + dq) % th);
                let at = (img * g.c + ch) * hw;
                let eo = &mut self.eo[dq * n..(dq + 1) * n];
                tile_row_columns(&xs[at..at + hw], g, ty, tw, &mut self.row, eo);
            }
            let vt = &mut self.tmp[..16 * t];
            input_transform(&self.eo[..r * n], tw, vt);
            for (xi, row) in vt.chunks_exact(t).enumerate() {
                let at = (xi * g.c + ch) * t;
                v[at..at + t].copy_from_slice(row);
            }
        }
    }

    fn new(g: &ConvGeom, tiles: usize) -> Self {
        let (_, ow) = g.out_hw();
        let tw = ow / 2;
        let rows = tiles / tw;
        Scratch {
            v: vec![0.0; 16 * g.c * tiles],
            m: vec![0.0; 16 * g.o * tiles],
            row: vec![0.0; 2 * tw + 2],
            eo: vec![0.0; rows * 8 * (tw + 1)],
            tmp: vec![0.0; 16 * tiles],
        }
    }
}

/// The four zero-padded input rows of tile row `ty` of one channel `plane`, split into even
/// and odd columns: `eo` = `(4, 2, tw + 1)`. Tile `tx` covers columns `2tx .. 2tx + 4` of a
/// padded row: even `tx`, odd `tx`, even `tx + 1`, odd `tx + 1`.
fn tile_row_columns(
    plane: &[f32],
    g: &ConvGeom,
    ty: usize,
    tw: usize,
    row: &mut [f32],
    eo: &mut [f32],
) {
    let wp = 2 * tw + 2;
    for (i, eo) in eo.chunks_exact_mut(2 * (tw + 1)).enumerate() {
        row.fill(0.0);
        let yy = (2 * ty + i) as isize - g.pad[0] as isize;
        if yy >= 0 && (yy as usize) < g.h {
            let src = &plane[yy as usize * g.w..(yy as usize + 1) * g.w];
            // padded column k holds input column k − pad
            let k0 = g.pad[1].min(wp);
            let len = g.w.min(wp - k0);
            row[k0..k0 + len].copy_from_slice(&src[..len]);
        }
        let (ev, od) = eo.split_at_mut(tw + 1);
        simd::deinterleave(row, ev, od);
    }
}

simd::wide_fn!(
    /// `tmp (16, t)` = `V = Bᵀ d B` of the `t` tiles of a block, one channel, from
    /// [`tile_row_columns`]'s `eo` of each tile row; computed across a tile row's tiles in
    /// vector lanes.
    fn input_transform = input_transform_body(eo: &[f32], tw: usize, tmp: &mut [f32])
);

#[inline(always)]
fn input_transform_body(eo: &[f32], tw: usize, tmp: &mut [f32]) {
    let n = tw + 1;
    let t = eo.len() / (8 * n) * tw;
    let (t0, rest) = tmp.split_at_mut(4 * t);
    let (t1, rest) = rest.split_at_mut(4 * t);
    let (t2, t3) = rest.split_at_mut(4 * t);
    for (dq, eo) in eo.chunks_exact(8 * n).enumerate() {
        let ev: [&[f32]; 4] = std::array::from_fn(|i| &eo[2 * i * n..2 * i * n + n]);
        let od: [&[f32]; 4] = std::array::from_fn(|i| &eo[(2 * i + 1) * n..(2 * i + 2) * n]);
        for tx in 0..tw {
            // d[i] = the tile's row i; Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3)
            let d = |i: usize| [ev[i][tx], od[i][tx], ev[i][tx + 1], od[i][tx + 1]];
            let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
            let mut b = [[0f32; 4]; 4];
            for j in 0..4 {
                b[0][j] = d0[j] - d2[j];
                b[1][j] = d1[j] + d2[j];
                b[2][j] = d2[j] - d1[j];
                b[3][j] = d1[j] - d3[j];
            }
            // (Bᵀ d) B: the same on the columns; ξ = 4i + j
            let k = dq * tw + tx;
            for (i, out) in [&mut *t0, &mut *t1, &mut *t2, &mut *t3]
                .into_iter()
                .enumerate()
            {
                let r = &b[i];
                out[k] = r[0] - r[2];
                out[t + k] = r[1] + r[2];
                out[2 * t + k] = r[2] - r[1];
                out[3 * t + k] = r[1] - r[3];
            }
        }
    }
}

simd::wide_fn!(
    /// `tmp (4, t)` = the 2×2 outputs `Aᵀ M A` of a block's `t` tiles for one output channel
    /// (top-left, top-right, bottom-left, bottom-right), `M[ξ]` at `m[ξ·stride + base ..]`;
    /// computed across the tiles in vector lanes.
    fn output_transform = output_transform_body(m: &[f32], stride: usize, base: usize, t: usize, tmp: &mut [f32])
);

#[inline(always)]
fn output_transform_body(m: &[f32], stride: usize, base: usize, t: usize, tmp: &mut [f32]) {
    let mx: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi * stride + base..xi * stride + base + t]);
    let (y00, rest) = tmp.split_at_mut(t);
    let (y01, rest) = rest.split_at_mut(t);
    let (y10, rest) = rest.split_at_mut(t);
    let y11 = &mut rest[..t];
    for k in 0..t {
        // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3), then the same on the columns
        let at = |xi: usize| mx[xi][k];
        let mut s = [[0f32; 4]; 2];
        for j in 0..4 {
            let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
            s[0][j] = m0 + m1 + m2;
            s[1][j] = m1 - m2 - m3;
        }
        y00[k] = s[0][0] + s[0][1] + s[0][2];
        y01[k] = s[0][1] - s[0][2] - s[0][3];
        y10[k] = s[1][0] + s[1][1] + s[1][2];
        y11[k] = s[1][1] - s[1][2] - s[1][3];
    }
}

/// Tiles per block of [`grad_weight`]: its GEMMs sum over the tiles (`K` = tiles), so longer
/// blocks read and write the accumulated `(16, O, C)` less often.
const BLOCK_TILES_DW: usize = 128;

/// The weight gradient `dW (O, C, 3, 3)` of the convolutions [`forward`] computes: per block of tiles, the input transformed as in [`forward`] (`V`), the
/// output gradient's 2×2 tiles as `dM = A dY Aᵀ` (`(16, O, tiles)`), and `dU[ξ] += dM[ξ] ·
/// V[ξ]ᵀ` (16 GEMMs summing over the tiles); at the end `dW = Gᵀ dU G` per kernel. Runs of
/// images per task, their sums added in order.
pub fn grad_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert!(
        chosen_shape(g),
        "winograd::grad_weight: a 3×3 stride-1 convolution with even output sides, got {g:?}"
    );
    assert_eq!(x.len(), g.x_len(), "winograd::grad_weight: input");
    assert_eq!(
        dy.len(),
        g.y_len(),
        "winograd::grad_weight: output gradient"
    );
    let (oh, ow) = g.out_hw();
    let (th, tw) = (oh / 2, ow / 2);
    let (chw, ohw) = (g.c * g.h * g.w, g.o * oh * ow);
    let per = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let rows = (block_tiles_dw() / tw).clamp(1, per * th);
    let parts: Vec<Vec<f32>> = x
        .par_chunks(per * chw)
        .zip(dy.par_chunks(per * ohw))
        .map(|(xs, dys)| {
            let t_max = rows * tw;
            let mut sc = Scratch::new(g, t_max);
            let mut du = vec![0f32; 16 * g.o * g.c];
            let mut dmt = vec![0f32; 16 * t_max];
            let q_all = xs.len() / chw * th;
            for q0 in (0..q_all).step_by(rows) {
                let r = rows.min(q_all - q0);
                let t = r * tw;
                sc.transform_block(xs, g, q0, r);
                let dm = &mut sc.m[..16 * g.o * t];
                for oc in 0..g.o {
                    // the 2×2 output-gradient tiles as four rows (top-left, top-right, ...)
                    let y4 = &mut sc.tmp[..4 * t];
                    for dq in 0..r {
                        let (img, ty) = ((q0 + dq) / th, (q0 + dq) % th);
                        let row = img * ohw + oc * oh * ow + 2 * ty * ow;
                        for half in 0..2 {
                            let src = &dys[row + half * ow..row + (half + 1) * ow];
                            let at = 2 * half * t + dq * tw;
                            let (left, right) = y4.split_at_mut(at + t);
                            simd::deinterleave(src, &mut left[at..at + tw], &mut right[..tw]);
                        }
                    }
                    let dmt = &mut dmt[..16 * t];
                    output_grad_transform(y4, t, dmt);
                    for (xi, row) in dmt.chunks_exact(t).enumerate() {
                        let at = (xi * g.o + oc) * t;
                        dm[at..at + t].copy_from_slice(row);
                    }
                }
                // dU[ξ] (O, C) += dM[ξ] (O, tiles) · V[ξ]ᵀ (tiles, C), accumulated transposed
                // as (C, O): the `gemm` crate then packs only dM, not V (as for im2col's dWᵀ)
                for (xi, dux) in du.chunks_exact_mut(g.o * g.c).enumerate() {
                    let dmx = &sc.m[xi * g.o * t..(xi + 1) * g.o * t];
                    let vx = &sc.v[xi * g.c * t..(xi + 1) * g.c * t];
                    gemm_transposed_dst((g.o, g.c, t), dux, true, (dmx, 1, t), (vx, t, 1), false);
                }
            }
            du
        })
        .collect();
    let mut du = vec![0f32; 16 * g.o * g.c];
    for p in &parts {
        du.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    weights_from_transformed(&du, g.o, g.c)
}

/// The shapes [`grad_weight`] and the blocked [`forward`] handle.
fn chosen_shape(g: &ConvGeom) -> bool {
    let (oh, ow) = g.out_hw();
    applies(g) && oh % 2 == 0 && ow % 2 == 0 && oh > 0 && ow > 0 && g.pad[0] <= 2 && g.pad[1] <= 2
}

simd::wide_fn!(
    /// `dm (16, t)` = `A dY Aᵀ` of `t` output-gradient tiles given as four rows `y4 (4, t)`
    /// (top-left, top-right, bottom-left, bottom-right).
    fn output_grad_transform = output_grad_transform_body(y4: &[f32], t: usize, dm: &mut [f32])
);

#[inline(always)]
fn output_grad_transform_body(y4: &[f32], t: usize, dm: &mut [f32]) {
    let (y00, y01, y10, y11) = (
        &y4[..t],
        &y4[t..2 * t],
        &y4[2 * t..3 * t],
        &y4[3 * t..4 * t],
    );
    let (d0, rest) = dm.split_at_mut(4 * t);
    let (d1, rest) = rest.split_at_mut(4 * t);
    let (d2, d3) = rest.split_at_mut(4 * t);
    for k in 0..t {
        // A dY: rows (r0, r0 + r1, r0 − r1, −r1) of the tile's rows r0, r1; then the same on
        // the columns: (p, q) → (p, p + q, p − q, −q)
        let (a, b) = ([y00[k], y01[k]], [y10[k], y11[k]]);
        let rows = [
            a,
            [a[0] + b[0], a[1] + b[1]],
            [a[0] - b[0], a[1] - b[1]],
            [-b[0], -b[1]],
        ];
        for (out, [p, q]) in [&mut *d0, &mut *d1, &mut *d2, &mut *d3]
            .into_iter()
            .zip(rows)
        {
            out[k] = p;
            out[t + k] = p + q;
            out[2 * t + k] = p - q;
            out[3 * t + k] = -q;
        }
    }
}

/// `dW = Gᵀ dU G` of every kernel: `dU` as `(16, C, O)` → `(O, C, 3, 3)`.
fn weights_from_transformed(du: &[f32], o: usize, c: usize) -> Vec<f32> {
    // Gᵀ (3×4)
    const GT: [[f32; 4]; 3] = [
        [1.0, 0.5, 0.5, 0.0],
        [0.0, 0.5, -0.5, 0.0],
        [0.0, 0.5, 0.5, 1.0],
    ];
    let oc_all = o * c;
    let mut dw = vec![0f32; oc_all * 9];
    for oc in 0..oc_all {
        let (oo, cc) = (oc / c, oc % c);
        let at = |xi: usize| du[xi * oc_all + cc * o + oo];
        // t = Gᵀ dU (3×4), then t G (3×3)
        let mut t = [[0f32; 4]; 3];
        for (r, gr) in GT.iter().enumerate() {
            for j in 0..4 {
                t[r][j] = (0..4).map(|i| gr[i] * at(i * 4 + j)).sum();
            }
        }
        for r in 0..3 {
            for (s2, gs) in GT.iter().enumerate() {
                dw[oc * 9 + r * 3 + s2] = (0..4).map(|j| t[r][j] * gs[j]).sum();
            }
        }
    }
    dw
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The input gradient `dx (N, C, H, W)` of the convolution `g` (3×3, stride 1) from `dy` and
/// the weights: itself a 3×3 stride-1 convolution of `dy` (flipped weights, channels swapped,
/// padding `2 − p`), computed by [`forward`].
pub fn grad_input(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (flipped, t) = super::conv2d::flipped_conv(w, g);
    assert!(
        chosen_shape(&t),
        "winograd::grad_input: a 3×3 stride-1 convolution with even input sides, got {g:?}"
    );
    forward(dy, &flipped, &t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_data::rng::SplitMix64;

    fn geom(n: usize, c: usize, h: usize, w: usize, o: usize, pad: usize) -> ConvGeom {
        ConvGeom {
            n,
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [pad, pad],
        }
    }

    #[test]
    fn matches_a_float64_direct_convolution() {
        let mut rng = SplitMix64::new(5);
        // paddings 1, 0 and 2, channel counts across the GEMM's blocking, blocks of one image
        // and of several; He-initialised weights and activations of a few units, as in training
        for (n, c, h, w, o, pad) in [
            (2, 3, 8, 8, 4, 1),
            (3, 5, 6, 10, 6, 1),
            (2, 16, 6, 4, 8, 0),
            (4, 64, 8, 8, 64, 1),
            (1, 1, 4, 4, 1, 0),
            (2, 8, 10, 6, 5, 0),
            (2, 3, 4, 6, 4, 2),
            (2, 4, 32, 32, 3, 1),
        ] {
            let g = geom(n, c, h, w, o, pad);
            let x: Vec<f32> = (0..g.x_len()).map(|_| rng.uniform(-3.0, 3.0)).collect();
            let bound = (6.0 / (9 * c) as f32).sqrt();
            let wt: Vec<f32> = (0..o * c * 9).map(|_| rng.uniform(-bound, bound)).collect();
            let got = forward(&x, &wt, &g);
            let want = super::super::conv2d::tests::naive(&x, &wt, &g);
            let im2col = super::super::conv2d::forward(&x, &wt, &g);
            check(&g, &got, &want, &im2col);
        }
    }

    /// `got` within 1e-5 of the largest value of the float64 `want` (F(2,3) in f32: a few
    /// ulps of the largest output), and as close to the im2col path's result.
    fn check(g: &ConvGeom, got: &[f32], want: &[f64], im2col: &[f32]) {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f64, |a, (p, q)| a.max((*p as f64 - q).abs()));
        assert!(
            err <= 1e-5 * scale,
            "{g:?}: max |error| {err} for values up to {scale}"
        );
        let diff = got
            .iter()
            .zip(im2col)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            (diff as f64) <= 2e-5 * scale,
            "{g:?}: against im2col {diff}"
        );
    }

    #[test]
    fn the_input_gradient_matches_the_im2col_path() {
        let mut rng = SplitMix64::new(9);
        for (n, c, h, w, o, pad) in [
            (2, 3, 8, 8, 4, 1),
            (3, 5, 6, 10, 6, 1),
            (2, 16, 4, 6, 8, 1),
            (2, 6, 16, 12, 7, 1),
        ] {
            let g = geom(n, c, h, w, o, pad);
            let (oh, ow) = g.out_hw();
            let dy: Vec<f32> = (0..n * o * oh * ow)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|_| rng.uniform(-0.5, 0.5)).collect();
            let got = grad_input(&wt, &dy, &g);
            let want = super::super::conv2d::grad_input(&wt, &dy, &g);
            assert_eq!(got.len(), g.x_len());
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                diff <= 2e-5 * scale,
                "{g:?}: {diff} for values up to {scale}"
            );
        }
    }

    #[test]
    fn only_3x3_stride_1() {
        let mut g = geom(1, 1, 4, 4, 1, 1);
        assert!(applies(&g));
        g.stride = [2, 2];
        assert!(!applies(&g));
        g.stride = [1, 1];
        assert!(chosen_shape(&g));
        // odd output sides are not computed here
        g.h = 5;
        assert!(applies(&g) && !chosen_shape(&g));
        g.kh = 1;
        assert!(!applies(&g));
    }

    /// The weight gradient against a float64 one straight from the definition, and against
    /// the im2col path.
    #[test]
    fn the_weight_gradient_matches_a_float64_reference() {
        let mut rng = SplitMix64::new(13);
        // paddings 1, 0, 2; blocks of whole images and of parts of one; several tasks
        for (n, c, h, w, o, pad) in [
            (3, 4, 8, 8, 5, 1),
            (2, 3, 10, 6, 4, 0),
            (2, 2, 4, 6, 3, 2),
            (5, 6, 32, 32, 7, 1),
        ] {
            let g = geom(n, c, h, w, o, pad);
            let (oh, ow) = g.out_hw();
            let x: Vec<f32> = (0..g.x_len()).map(|_| rng.uniform(-2.0, 2.0)).collect();
            let dy: Vec<f32> = (0..n * o * oh * ow)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let got = grad_weight(&x, &dy, &g);
            let mut want = vec![0f64; o * c * 9];
            for b in 0..n {
                for oc in 0..o {
                    for ch in 0..c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let mut acc = 0f64;
                                for yy in 0..oh {
                                    for xx in 0..ow {
                                        let (sy, sx) = (yy + i, xx + j);
                                        if sy < pad || sx < pad || sy - pad >= h || sx - pad >= w {
                                            continue;
                                        }
                                        acc += dy[((b * o + oc) * oh + yy) * ow + xx] as f64
                                            * x[((b * c + ch) * h + sy - pad) * w + sx - pad]
                                                as f64;
                                    }
                                }
                                want[((oc * c + ch) * 3 + i) * 3 + j] += acc;
                            }
                        }
                    }
                }
            }
            let im2col = super::super::conv2d::grad_weight(&x, &dy, &g);
            check(&g, &got, &want, &im2col);
        }
    }
}
