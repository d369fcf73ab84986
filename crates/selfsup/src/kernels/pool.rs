//! Max pooling on NCHW `f32` slices: forward, and the backward that finds each window's
//! maximum again in the input (no index tensor is kept between the two).
//!
//! Why our own: in the step-c profile (ConvNet [32, 64, 128] on 28×28, batch 512) Burn's
//! `flex` max pool took 18 % of the step (an integer division per element to locate the
//! window) and its backward scatter 2 %.
//!
//! The maximum of a window is its first largest value in row-major order (a strict `>`), the
//! element that receives the gradient; padding never wins.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::uninit;

/// A max pool over `n · c` planes of `h × w`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Symmetric padding (top = bottom, left = right).
    pub pad: [usize; 2],
}

impl PoolGeom {
    /// `(OH, OW)` (floor mode).
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |len: usize, k: usize, s: usize, p: usize| (len + 2 * p).saturating_sub(k) / s + 1;
        (
            o(self.h, self.kernel[0], self.stride[0], self.pad[0]),
            o(self.w, self.kernel[1], self.stride[1], self.pad[1]),
        )
    }

    /// Number of output values.
    pub fn y_len(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.n * self.c * oh * ow
    }

    /// The input range `[lo, hi)` of output position `o` along one axis of length `len`.
    fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
        let start = (o * s) as isize - p as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(len);
        (lo, hi.max(lo))
    }

    /// Calls `f(output index in the plane, input index of the window's maximum in the plane)`
    /// for every output of one input plane, in order. A window with no value above −∞ (or of
    /// NaNs only) gives its first element.
    #[inline]
    fn argmax_plane(&self, plane: &[f32], mut f: impl FnMut(usize, usize)) {
        let (oh, ow) = self.out_hw();
        let ([kh, kw], [sh, sw], [ph, pw]) = (self.kernel, self.stride, self.pad);
        for oy in 0..oh {
            let (y0, y1) = Self::window(oy, kh, sh, ph, self.h);
            for ox in 0..ow {
                let (x0, x1) = Self::window(ox, kw, sw, pw, self.w);
                let mut at = y0 * self.w + x0;
                let mut best = f32::NEG_INFINITY;
                for iy in y0..y1 {
                    let row = &plane[iy * self.w..(iy + 1) * self.w];
                    for (ix, &v) in row.iter().enumerate().take(x1).skip(x0) {
                        if v > best {
                            best = v;
                            at = iy * self.w + ix;
                        }
                    }
                }
                f(oy * ow + ox, at);
            }
        }
    }
}

/// Planes handed to one task at least (a plane of a small map is little work).
const MIN_PLANES: usize = 8;

/// `y (N, C, OH, OW)` = the maximum of each window of `x (N, C, H, W)`.
pub fn max_pool_forward(x: &[f32], g: &PoolGeom) -> Vec<f32> {
    let plane = g.h * g.w;
    assert_eq!(x.len(), g.n * g.c * plane, "max pool input");
    let (oh, ow) = g.out_hw();
    if oh * ow == 0 {
        return vec![0.0f32; g.y_len()];
    }
    let ([kh, kw], [sh, sw], [ph, pw]) = (g.kernel, g.stride, g.pad);
    let pair = g.kernel == [2, 2] && g.stride == [2, 2] && g.pad == [0, 0];
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(plane))
            .with_min_len(MIN_PLANES)
            .for_each(|(yp, xp)| {
                if pair {
                    // the common 2×2 stride-2 pool: no window bounds, a loop the compiler vectorises
                    for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                        let r0 = &xp[2 * oy * g.w..2 * oy * g.w + 2 * ow];
                        let r1 = &xp[(2 * oy + 1) * g.w..(2 * oy + 1) * g.w + 2 * ow];
                        for ((o, a), b) in yr
                            .iter_mut()
                            .zip(r0.chunks_exact(2))
                            .zip(r1.chunks_exact(2))
                        {
                            o.write(gt_max(gt_max(gt_max(a[0], a[1]), b[0]), b[1]));
                        }
                    }
                    return;
                }
                for oy in 0..oh {
                    let (y0, y1) = PoolGeom::window(oy, kh, sh, ph, g.h);
                    for ox in 0..ow {
                        let (x0, x1) = PoolGeom::window(ox, kw, sw, pw, g.w);
                        let mut best = f32::NEG_INFINITY;
                        for iy in y0..y1 {
                            for &v in &xp[iy * g.w + x0..iy * g.w + x1] {
                                best = gt_max(best, v);
                            }
                        }
                        yp[oy * ow + ox].write(best);
                    }
                }
            })
    };
    // SAFETY: one plane of `y` per plane of `x`, and each of its `oh · ow` values is written
    unsafe { uninit::written(g.y_len(), fill) }
}

/// The larger of `a` and `b` as the window scan keeps it: `b` only when strictly greater.
#[inline(always)]
pub(super) fn gt_max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// `dx (N, C, H, W)`: each output's gradient added to the input element that was its window's
/// maximum.
pub fn max_pool_backward(x: &[f32], dy: &[f32], g: &PoolGeom) -> Vec<f32> {
    let plane = g.h * g.w;
    assert_eq!(x.len(), g.n * g.c * plane, "max pool input");
    assert_eq!(dy.len(), g.y_len(), "max pool output gradient");
    let (oh, ow) = g.out_hw();
    if oh * ow == 0 {
        return vec![0.0f32; x.len()];
    }
    if g.kernel == [2, 2] && g.stride == [2, 2] && g.pad == [0, 0] {
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            dx.par_chunks_mut(plane)
                .zip(x.par_chunks(plane).zip(dy.par_chunks(oh * ow)))
                .with_min_len(MIN_PLANES)
                .for_each(|(dxp, (xp, dyp))| pair_backward(xp, dyp, dxp, g.w, ow))
        };
        // SAFETY: `pair_backward` writes every element of its plane, and there is one plane
        // of `dx` per plane of `x`
        return unsafe { uninit::written(x.len(), fill) };
    }
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(dy.par_chunks(oh * ow)))
        .with_min_len(MIN_PLANES)
        .for_each(|(dxp, (xp, dyp))| g.argmax_plane(xp, |o, i| dxp[i] += dyp[o]));
    dx
}

/// The backward of the 2×2 stride-2 pool on one plane: windows do not overlap, so each input
/// element gets its window's gradient or zero. The scan of [`PoolGeom::argmax_plane`] written
/// without branches (`>` against a running maximum that starts at −∞), so that it vectorises.
/// Writes every element of `dxp`: a last row or column outside every window gets zero.
fn pair_backward(xp: &[f32], dyp: &[f32], dxp: &mut [MaybeUninit<f32>], w: usize, ow: usize) {
    let oh = dyp.len() / ow;
    for d in &mut dxp[2 * oh * w..] {
        d.write(0.0);
    }
    for (oy, dyr) in dyp.chunks_exact(ow).enumerate() {
        let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
        let (x0, x1) = (&xp[r0..r0 + 2 * ow], &xp[r1..r1 + 2 * ow]);
        let (d0, d1) = dxp[r0..r1 + w].split_at_mut(w);
        for d in d0[2 * ow..].iter_mut().chain(&mut d1[2 * ow..]) {
            d.write(0.0);
        }
        for (i, &g) in dyr.iter().enumerate() {
            let v = [x0[2 * i], x0[2 * i + 1], x1[2 * i], x1[2 * i + 1]];
            let (mut best, mut at) = (f32::NEG_INFINITY, 0u8);
            for (k, &e) in v.iter().enumerate() {
                let up = e > best;
                best = if up { e } else { best };
                at = if up { k as u8 } else { at };
            }
            d0[2 * i].write(if at == 0 { g } else { 0.0 });
            d0[2 * i + 1].write(if at == 1 { g } else { 0.0 });
            d1[2 * i].write(if at == 2 { g } else { 0.0 });
            d1[2 * i + 1].write(if at == 3 { g } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_data::rng::SplitMix64;

    /// Max pool written from the definition, in float64, with the window's maximum as an index.
    fn naive(x: &[f32], g: &PoolGeom) -> (Vec<f64>, Vec<usize>) {
        let (oh, ow) = g.out_hw();
        let (mut y, mut at) = (Vec::new(), Vec::new());
        for p in 0..g.n * g.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = (f64::NEG_INFINITY, usize::MAX);
                    for ky in 0..g.kernel[0] {
                        for kx in 0..g.kernel[1] {
                            let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let i = p * g.h * g.w + iy as usize * g.w + ix as usize;
                            if (x[i] as f64) > best.0 {
                                best = (x[i] as f64, i);
                            }
                        }
                    }
                    y.push(best.0);
                    at.push(best.1);
                }
            }
        }
        (y, at)
    }

    #[test]
    fn forward_and_backward_match_the_definition() {
        let geoms = [
            ([2, 2], [2, 2], [0, 0], 28, 28),
            ([2, 2], [2, 2], [0, 0], 7, 7),
            ([3, 3], [2, 2], [1, 1], 9, 8),
            ([3, 2], [1, 2], [1, 0], 5, 6),
        ];
        for (kernel, stride, pad, h, w) in geoms {
            let g = PoolGeom {
                n: 3,
                c: 5,
                h,
                w,
                kernel,
                stride,
                pad,
            };
            let mut rng = SplitMix64::new(7);
            let x: Vec<f32> = (0..g.n * g.c * h * w)
                .map(|_| rng.next_f64() as f32 - 0.5)
                .collect();
            let dy: Vec<f32> = (0..g.y_len()).map(|_| rng.next_f64() as f32).collect();
            let (want, at) = naive(&x, &g);
            let y = max_pool_forward(&x, &g);
            assert_eq!(y.len(), want.len());
            for (a, b) in y.iter().zip(&want) {
                assert_eq!(*a as f64, *b, "{g:?}");
            }
            let mut want_dx = vec![0.0f64; x.len()];
            for (o, &i) in at.iter().enumerate() {
                want_dx[i] += dy[o] as f64;
            }
            let dx = max_pool_backward(&x, &dy, &g);
            for (a, b) in dx.iter().zip(&want_dx) {
                assert!((*a as f64 - b).abs() <= 1e-6, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The 2×2 backward's branch-free scan picks the element the general scan picks, also for
    /// ties, −∞ and NaN (values drawn from a small set so that they repeat); odd sides leave
    /// the last row and column without gradient.
    #[test]
    fn pair_backward_matches_the_general_scan() {
        let g = PoolGeom {
            n: 2,
            c: 3,
            h: 7,
            w: 9,
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0, 0],
        };
        let values = [0.0, 1.0, -1.0, f32::NEG_INFINITY, f32::NAN, 1.0];
        let mut rng = SplitMix64::new(3);
        let x: Vec<f32> = (0..g.n * g.c * g.h * g.w)
            .map(|_| values[(rng.next_f64() * values.len() as f64) as usize % values.len()])
            .collect();
        let dy: Vec<f32> = (0..g.y_len()).map(|i| 1.0 + i as f32).collect();
        let (oh, ow) = g.out_hw();
        let plane = g.h * g.w;
        let mut want = vec![0.0f32; x.len()];
        for p in 0..g.n * g.c {
            g.argmax_plane(&x[p * plane..(p + 1) * plane], |o, i| {
                want[p * plane + i] += dy[p * oh * ow + o]
            });
        }
        assert_eq!(max_pool_backward(&x, &dy, &g), want);
    }
}
