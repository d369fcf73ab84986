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
//! Images run in parallel on rayon (each with its own column buffer and, for dW, its own
//! accumulator); a 1×1 stride-1 convolution uses the input itself as `col`.

use rayon::prelude::*;

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

/// `x_n (C, H, W)` → `col (C·KH·KW, OH·OW)`.
fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let l = oh * ow;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * l..(row + 1) * l];
                // valid output columns: 0 <= ox*sw + kj - pw < W
                let ox_lo = pw.saturating_sub(kj).div_ceil(sw).min(ow);
                let ox_hi = if g.w + pw > kj {
                    ((g.w + pw - kj - 1) / sw + 1).min(ow)
                } else {
                    0
                }
                .max(ox_lo);
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

/// `col (C·KH·KW, OH·OW)` → adds into `dx_n (C, H, W)` (which must start zeroed).
fn col2im(col: &[f32], g: &ConvGeom, dx: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let l = oh * ow;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &col[row * l..(row + 1) * l];
                let ox_lo = pw.saturating_sub(kj).div_ceil(sw).min(ow);
                let ox_hi = if g.w + pw > kj {
                    ((g.w + pw - kj - 1) / sw + 1).min(ow)
                } else {
                    0
                }
                .max(ox_lo);
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

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, strides in elements (column, row).
#[allow(clippy::too_many_arguments)]
fn gemm(
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
    debug_assert!(dst.len() >= m * n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices cover every element addressed by (m, n, k) and the strides (checked
    // above in debug builds and guaranteed by the callers' shapes); dst does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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

/// Whether to split the batch over threads (else one image at a time, GEMMs in parallel).
fn per_image_parallel(n: usize) -> bool {
    n >= 2 * rayon::current_num_threads()
}

/// `y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C, KH, KW))`.
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(x.len(), g.x_len(), "conv2d input");
    assert_eq!(w.len(), g.w_len(), "conv2d weight");
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let mut y = vec![0.0f32; g.y_len()];
    let one = |x_n: &[f32], y_n: &mut [f32], col: &mut Vec<f32>, par: bool| {
        let col: &[f32] = if g.is_pointwise() {
            x_n
        } else {
            col.resize(ck * l, 0.0);
            im2col(x_n, g, col);
            col
        };
        gemm(g.o, l, ck, y_n, false, w, 1, ck, col, 1, l, par);
    };
    if per_image_parallel(g.n) {
        y.par_chunks_mut(g.o * l)
            .zip(x.par_chunks(chw))
            .for_each_init(Vec::new, |col, (y_n, x_n)| one(x_n, y_n, col, false));
    } else {
        let mut col = Vec::new();
        for (y_n, x_n) in y.chunks_mut(g.o * l).zip(x.chunks(chw)) {
            one(x_n, y_n, &mut col, true);
        }
    }
    y
}

/// Gradient of the weight: `dW = Σ_n dy_n · im2col(x_n)ᵀ`, shape `(O, C, KH, KW)`.
pub fn grad_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(x.len(), g.x_len(), "conv2d input");
    assert_eq!(dy.len(), g.y_len(), "conv2d output gradient");
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let one = |x_n: &[f32], dy_n: &[f32], acc: &mut [f32], col: &mut Vec<f32>, par: bool| {
        let col: &[f32] = if g.is_pointwise() {
            x_n
        } else {
            col.resize(ck * l, 0.0);
            im2col(x_n, g, col);
            col
        };
        // acc (O, CK) += dy_n (O, L) · colᵀ (L, CK)
        gemm(g.o, ck, l, acc, true, dy_n, 1, l, col, l, 1, par);
    };
    if per_image_parallel(g.n) {
        dy.par_chunks(g.o * l)
            .zip(x.par_chunks(chw))
            .fold(
                || (vec![0.0f32; g.w_len()], Vec::new()),
                |(mut acc, mut col), (dy_n, x_n)| {
                    one(x_n, dy_n, &mut acc, &mut col, false);
                    (acc, col)
                },
            )
            .map(|(acc, _)| acc)
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            })
            .unwrap_or_else(|| vec![0.0; g.w_len()])
    } else {
        let mut acc = vec![0.0f32; g.w_len()];
        let mut col = Vec::new();
        for (dy_n, x_n) in dy.chunks(g.o * l).zip(x.chunks(chw)) {
            one(x_n, dy_n, &mut acc, &mut col, true);
        }
        acc
    }
}

/// Gradient of the input: `dx_n = col2im(Wᵀ · dy_n)`, shape `(N, C, H, W)`.
pub fn grad_input(w: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(w.len(), g.w_len(), "conv2d weight");
    assert_eq!(dy.len(), g.y_len(), "conv2d output gradient");
    let (l, ck, chw) = (g.l(), g.ck(), g.c * g.h * g.w);
    let mut dx = vec![0.0f32; g.x_len()];
    let one = |dy_n: &[f32], dx_n: &mut [f32], col: &mut Vec<f32>, par: bool| {
        if g.is_pointwise() {
            // dx_n (C, L) = Wᵀ (C, O) · dy_n (O, L)
            gemm(ck, l, g.o, dx_n, false, w, ck, 1, dy_n, 1, l, par);
        } else {
            col.resize(ck * l, 0.0);
            gemm(ck, l, g.o, col, false, w, ck, 1, dy_n, 1, l, par);
            col2im(col, g, dx_n);
        }
    };
    if per_image_parallel(g.n) {
        dx.par_chunks_mut(chw)
            .zip(dy.par_chunks(g.o * l))
            .for_each_init(Vec::new, |col, (dx_n, dy_n)| one(dy_n, dx_n, col, false));
    } else {
        let mut col = Vec::new();
        for (dx_n, dy_n) in dx.chunks_mut(chw).zip(dy.chunks(g.o * l)) {
            one(dy_n, dx_n, &mut col, true);
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct float64 convolution, written from the definition.
    fn naive(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f64> {
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
                                    let xv = x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
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
            g(2, 3, 7, 6, 4, 3, 1, 1),  // 3×3 same
            g(5, 2, 8, 8, 3, 3, 2, 1),  // 3×3 stride 2
            g(4, 3, 5, 5, 2, 1, 1, 0),  // pointwise
            g(4, 3, 7, 7, 2, 1, 2, 0),  // 1×1 stride 2 (shortcut)
            g(1, 2, 9, 9, 3, 7, 2, 3),  // 7×7 stride 2 stem, one image
            g(6, 1, 4, 4, 2, 3, 1, 0),  // valid
        ]
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((*x as f64 - y).abs() <= tol * (1.0 + y.abs()), "[{i}] {x} vs {y}");
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
                naive(x, w, &g).iter().zip(&dy).map(|(a, b)| a * *b as f64).sum()
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
