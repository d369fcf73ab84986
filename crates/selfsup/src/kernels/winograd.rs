//! Winograd F(2×2, 3×3) convolution (Lavin & Gray, 2016) for 3×3 stride-1 convolutions, on
//! plain row-major NCHW `f32` slices like [`super::conv2d`]: 16 multiplications per 2×2 output
//! tile and input channel instead of 36, i.e. 2.25× fewer, done as 16 GEMMs over transformed
//! tiles.
//!
//! ```text
//! U[ξ] = (G g Gᵀ)[ξ]      per (out, in) channel pair        (16, O, C)
//! V[ξ] = (Bᵀ d B)[ξ]      per 4×4 input tile d (stride 2)   (C, 16, tiles)
//! M[ξ] = U[ξ] · V[ξ]      16 GEMMs                          (16, O, tiles)
//! y    = Aᵀ M A           per tile: its 2×2 outputs
//! ```
//!
//! Issue 15, first steps: the forward pass (tested against a float64 direct convolution) and
//! the input gradient (the forward pass on flipped weights); not yet wired into
//! [`super::ext`] (the weight gradient, the tile size choice per layer and the benchmark come
//! next).

// the transforms index their 4×4 matrices as the paper writes them
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::conv2d::ConvGeom;
use super::matmul::gemm;

/// Whether a convolution is one this module computes: 3×3, stride 1.
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == [1, 1]
}

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

/// `V = Bᵀ d B` of every 4×4 input tile (zero outside the image) of the images `n0..n0 + nb`,
/// as `(C, 16, nb·tiles)`: one contiguous block per channel, written by one task, which the
/// GEMMs read with a row stride of `16·nb·tiles`.
fn transform_input(x: &[f32], g: &ConvGeom, n0: usize, nb: usize, v: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let p = nb * tiles;
    let (h, w, c) = (g.h, g.w, g.c);
    v.par_chunks_mut(16 * p).enumerate().for_each(|(ch, vc)| {
        for b in 0..nb {
            let img = &x[((n0 + b) * c + ch) * h * w..((n0 + b) * c + ch + 1) * h * w];
            for ty in 0..th {
                for tx in 0..tw {
                    let mut d = [[0f32; 4]; 4];
                    for (i, row) in d.iter_mut().enumerate() {
                        let yy = (2 * ty + i) as isize - g.pad[0] as isize;
                        if yy < 0 || yy >= h as isize {
                            continue;
                        }
                        for (j, e) in row.iter_mut().enumerate() {
                            let xx = (2 * tx + j) as isize - g.pad[1] as isize;
                            if xx >= 0 && xx < w as isize {
                                *e = img[yy as usize * w + xx as usize];
                            }
                        }
                    }
                    // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3)
                    let mut t = [[0f32; 4]; 4];
                    for j in 0..4 {
                        t[0][j] = d[0][j] - d[2][j];
                        t[1][j] = d[1][j] + d[2][j];
                        t[2][j] = d[2][j] - d[1][j];
                        t[3][j] = d[1][j] - d[3][j];
                    }
                    // (Bᵀ d) B: the same on the columns
                    let col = b * tiles + ty * tw + tx;
                    for i in 0..4 {
                        let r = [
                            t[i][0] - t[i][2],
                            t[i][1] + t[i][2],
                            t[i][2] - t[i][1],
                            t[i][1] - t[i][3],
                        ];
                        for (j, val) in r.into_iter().enumerate() {
                            vc[(i * 4 + j) * p + col] = val;
                        }
                    }
                }
            }
        }
    });
}

/// `y = Aᵀ M A` of every tile: the 2×2 outputs, written into `y` (the images `n0..n0 + nb`).
fn transform_output(m: &[f32], g: &ConvGeom, n0: usize, nb: usize, y: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let p = nb * tiles;
    let o = g.o;
    let plane = oh * ow;
    y[n0 * o * plane..(n0 + nb) * o * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(bo, out)| {
            let (b, oc) = (bo / o, bo % o);
            for ty in 0..th {
                for tx in 0..tw {
                    let t = b * tiles + ty * tw + tx;
                    let at = |xi: usize| m[(xi * o + oc) * p + t];
                    // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3)
                    let mut s = [[0f32; 4]; 2];
                    for j in 0..4 {
                        let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                        s[0][j] = m0 + m1 + m2;
                        s[1][j] = m1 - m2 - m3;
                    }
                    for (i, row) in s.iter().enumerate() {
                        let yy = 2 * ty + i;
                        if yy >= oh {
                            continue;
                        }
                        let r = [row[0] + row[1] + row[2], row[1] - row[2] - row[3]];
                        for (j, &val) in r.iter().enumerate() {
                            let xx = 2 * tx + j;
                            if xx < ow {
                                out[yy * ow + xx] = val;
                            }
                        }
                    }
                }
            }
        });
}

/// Images per round: the transformed input of a round stays near 8 MB.
fn images_per_round(g: &ConvGeom) -> usize {
    let (oh, ow) = g.out_hw();
    let per_image = 16 * g.c.max(g.o) * oh.div_ceil(2) * ow.div_ceil(2) * 4;
    (8usize << 20)
        .checked_div(per_image)
        .unwrap_or(1)
        .clamp(1, g.n.max(1))
}

/// The forward convolution `y (N, O, OH, OW)` of `x (N, C, H, W)` with `w (O, C, 3, 3)`,
/// stride 1 and `g.pad` zero padding: the same result as [`super::conv2d::forward`] up to
/// float rounding.
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert!(
        applies(g),
        "winograd::forward: a 3×3 stride-1 convolution, got {g:?}"
    );
    assert_eq!(x.len(), g.x_len(), "winograd::forward: input");
    assert_eq!(w.len(), g.o * g.c * 9, "winograd::forward: weights");
    let (oh, ow) = g.out_hw();
    let tiles = oh.div_ceil(2) * ow.div_ceil(2);
    let mut y = vec![0f32; g.n * g.o * oh * ow];
    let u = transform_weights(w, g.o, g.c);
    let per = images_per_round(g);
    let mut v = vec![0f32; 16 * g.c * per * tiles];
    let mut m = vec![0f32; 16 * g.o * per * tiles];
    for n0 in (0..g.n).step_by(per) {
        let nb = per.min(g.n - n0);
        let p = nb * tiles;
        transform_input(x, g, n0, nb, &mut v[..16 * g.c * p]);
        let (oc, op) = (g.o * g.c, g.o * p);
        let v = &v[..16 * g.c * p];
        m[..16 * op]
            .par_chunks_mut(op)
            .enumerate()
            .for_each(|(xi, mx)| {
                let ux = &u[xi * oc..(xi + 1) * oc];
                // (O, C) · (C, P): U row-major; V's rows for ξ start at ξ·P, one per channel
                // every 16·P
                gemm(
                    g.o,
                    p,
                    g.c,
                    mx,
                    false,
                    ux,
                    1,
                    g.c,
                    &v[xi * p..],
                    1,
                    16 * p,
                    false,
                );
            });
        transform_output(&m[..16 * op], g, n0, nb, &mut y);
    }
    y
}

/// The input gradient `dx (N, C, H, W)` of the convolution `g` (3×3, stride 1) from `dy` and
/// the weights: itself a 3×3 stride-1 convolution of `dy` (flipped weights, channels swapped,
/// padding `2 − p`), computed by [`forward`].
pub fn grad_input(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert!(
        applies(g),
        "winograd::grad_input: a 3×3 stride-1 convolution, got {g:?}"
    );
    let (flipped, t) = super::conv2d::flipped_conv(w, g);
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
        // odd and even sides (partial tiles), padding 1 and 0, channel counts across the
        // GEMM's blocking; He-initialised weights and activations of a few units, as in training
        for (n, c, h, w, o, pad) in [
            (2, 3, 8, 8, 4, 1),
            (3, 5, 7, 9, 6, 1),
            (2, 16, 6, 5, 8, 0),
            (4, 64, 8, 8, 64, 1),
            (1, 1, 3, 3, 1, 0),
        ] {
            let g = geom(n, c, h, w, o, pad);
            let x: Vec<f32> = (0..g.x_len()).map(|_| rng.uniform(-3.0, 3.0)).collect();
            let bound = (6.0 / (9 * c) as f32).sqrt();
            let wt: Vec<f32> = (0..o * c * 9).map(|_| rng.uniform(-bound, bound)).collect();
            let got = forward(&x, &wt, &g);
            let want = super::super::conv2d::tests::naive(&x, &wt, &g);
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |a, (p, q)| a.max((*p as f64 - q).abs()));
            // F(2,3) in f32: a few ulps of the largest output
            assert!(
                err <= 1e-5 * scale,
                "{g:?}: max |error| {err} for outputs up to {scale}"
            );
            // and the im2col path agrees as closely
            let im2col = super::super::conv2d::forward(&x, &wt, &g);
            let diff = got
                .iter()
                .zip(&im2col)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                (diff as f64) <= 2e-5 * scale,
                "{g:?}: against im2col {diff}"
            );
        }
    }

    #[test]
    fn the_input_gradient_matches_the_im2col_path() {
        let mut rng = SplitMix64::new(9);
        for (n, c, h, w, o, pad) in [(2, 3, 8, 8, 4, 1), (3, 5, 7, 9, 6, 1), (2, 16, 6, 5, 8, 0)] {
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
        g.kh = 1;
        assert!(!applies(&g));
    }
}
