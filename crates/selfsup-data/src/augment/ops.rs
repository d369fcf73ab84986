//! Pixel operations on CHW `f32` working buffers (values in 0..255).

use super::config::ColorJitterConfig;
use crate::image::LUMA;
use crate::rng::SplitMix64;

/// Rotates each plane by `degrees` about the centre (bilinear, zero outside) into `dst`.
pub(super) fn rotate(src: &[f32], dst: &mut Vec<f32>, c: usize, h: usize, w: usize, degrees: f32) {
    dst.clear();
    dst.resize(src.len(), 0.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (hi, wi) = (h as isize, w as isize);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let out = &mut dst[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let dy = y as f32 - cy;
            for x in 0..w {
                let dx = x as f32 - cx;
                // Inverse rotation: where does output (x, y) come from?
                let sx = cos * dx + sin * dy + cx;
                let sy = -sin * dx + cos * dy + cy;
                let (fx, fy) = (sx.floor(), sy.floor());
                let (x0, y0) = (fx as isize, fy as isize);
                if x0 < -1 || y0 < -1 || x0 >= wi || y0 >= hi {
                    continue;
                }
                let (ax, ay) = (sx - fx, sy - fy);
                let px = |yy: isize, xx: isize| -> f32 {
                    if yy < 0 || xx < 0 || yy >= hi || xx >= wi {
                        0.0
                    } else {
                        plane[yy as usize * w + xx as usize]
                    }
                };
                let top = px(y0, x0) * (1.0 - ax) + px(y0, x0 + 1) * ax;
                let bot = px(y0 + 1, x0) * (1.0 - ax) + px(y0 + 1, x0 + 1) * ax;
                out[y * w + x] = top * (1.0 - ay) + bot * ay;
            }
        }
    }
}

/// Replaces RGB planes with their luma, replicated.
pub(super) fn to_grey(buf: &mut [f32], n: usize) {
    let (r, rest) = buf.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}

pub(super) fn factor(r: &mut SplitMix64, amount: f32) -> f32 {
    r.uniform((1.0 - amount).max(0.0), 1.0 + amount)
}

/// torchvision `ColorJitter` on a CHW buffer of `c` planes of `n` pixels (values 0..255).
pub(super) fn color_jitter(
    buf: &mut [f32],
    c: usize,
    n: usize,
    cfg: &ColorJitterConfig,
    r: &mut SplitMix64,
) {
    let mut order = [0usize, 1, 2, 3];
    r.shuffle(&mut order);
    let b = factor(r, cfg.brightness);
    let ct = factor(r, cfg.contrast);
    let s = factor(r, cfg.saturation);
    let hue = r.uniform(-cfg.hue, cfg.hue);
    for op in order {
        match op {
            0 if cfg.brightness > 0.0 => {
                for v in buf.iter_mut() {
                    *v = (*v * b).clamp(0.0, 255.0);
                }
            }
            1 if cfg.contrast > 0.0 => {
                let mean = if c == 3 {
                    let (rr, rest) = buf.split_at(n);
                    let (gg, bb) = rest.split_at(n);
                    let mut sum = 0f64;
                    for i in 0..n {
                        sum += (LUMA[0] * rr[i] + LUMA[1] * gg[i] + LUMA[2] * bb[i]) as f64;
                    }
                    (sum / n as f64) as f32
                } else {
                    (buf.iter().map(|&v| v as f64).sum::<f64>() / buf.len() as f64) as f32
                };
                let add = (1.0 - ct) * mean;
                for v in buf.iter_mut() {
                    *v = (*v * ct + add).clamp(0.0, 255.0);
                }
            }
            2 if cfg.saturation > 0.0 && c == 3 => {
                let (rr, rest) = buf.split_at_mut(n);
                let (gg, bb) = rest.split_at_mut(n);
                for i in 0..n {
                    let l = LUMA[0] * rr[i] + LUMA[1] * gg[i] + LUMA[2] * bb[i];
                    let add = (1.0 - s) * l;
                    rr[i] = (rr[i] * s + add).clamp(0.0, 255.0);
                    gg[i] = (gg[i] * s + add).clamp(0.0, 255.0);
                    bb[i] = (bb[i] * s + add).clamp(0.0, 255.0);
                }
            }
            3 if cfg.hue > 0.0 && c == 3 && hue != 0.0 => {
                let (rr, rest) = buf.split_at_mut(n);
                let (gg, bb) = rest.split_at_mut(n);
                for i in 0..n {
                    let (r2, g2, b2) = hue_shift(rr[i], gg[i], bb[i], hue);
                    rr[i] = r2;
                    gg[i] = g2;
                    bb[i] = b2;
                }
            }
            _ => {}
        }
    }
}

/// Shifts the hue of one RGB pixel (0..255) by `shift` turns.
#[inline]
pub(super) fn hue_shift(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let delta = maxc - minc;
    if delta <= 0.0 || maxc <= 0.0 {
        return (r, g, b);
    }
    let sat = delta / maxc;
    let mut hue = if maxc == r {
        (g - b) / delta
    } else if maxc == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    hue = (hue + shift).rem_euclid(1.0);
    let h6 = hue * 6.0;
    let i = (h6.floor() as i32).rem_euclid(6);
    let f = h6 - h6.floor();
    let v = maxc;
    let p = v * (1.0 - sat);
    let q = v * (1.0 - sat * f);
    let t = v * (1.0 - sat * (1.0 - f));
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Reflect-101 index (as torchvision's reflect padding), valid for `i` in `(-n, 2n - 1)`.
#[inline]
pub(super) fn reflect(i: isize, n: isize) -> usize {
    let j = if i < 0 { -i } else { i };
    (if j >= n { 2 * n - 2 - j } else { j }) as usize
}

/// Separable Gaussian blur of each plane, in place (uses `tmp` and `kernel` as scratch).
pub(super) fn gaussian_blur(
    buf: &mut [f32],
    tmp: &mut Vec<f32>,
    kernel: &mut Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
    sigma: f32,
) {
    let max_r = (h.min(w).saturating_sub(1)) / 2;
    let r = ((3.0 * sigma).ceil() as usize).min(max_r);
    if r == 0 || sigma <= 0.0 {
        return;
    }
    kernel.clear();
    let denom = 2.0 * sigma * sigma;
    for k in -(r as isize)..=(r as isize) {
        kernel.push((-((k * k) as f32) / denom).exp());
    }
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    tmp.clear();
    tmp.resize(buf.len(), 0.0);
    let ri = r as isize;
    let (hi, wi) = (h as isize, w as isize);
    // Horizontal pass through a reflect-padded copy of each row.
    let ks = kernel.len();
    let mut padded = [0f32; 256];
    let mut padded_vec = Vec::new();
    let pad: &mut [f32] = if w + 2 * r <= padded.len() {
        &mut padded[..w + 2 * r]
    } else {
        padded_vec.resize(w + 2 * r, 0.0);
        &mut padded_vec
    };
    for ch in 0..c {
        let src = &buf[ch * h * w..(ch + 1) * h * w];
        let mid = &mut tmp[ch * h * w..(ch + 1) * h * w];
        for (row, out) in src.chunks_exact(w).zip(mid.chunks_exact_mut(w)) {
            for (k, p) in pad.iter_mut().enumerate() {
                *p = row[reflect(k as isize - ri, wi)];
            }
            for (x, o) in out.iter_mut().enumerate() {
                *o = pad[x..x + ks]
                    .iter()
                    .zip(kernel.iter())
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }
    for ch in 0..c {
        let mid = &tmp[ch * h * w..(ch + 1) * h * w];
        let dst = &mut buf[ch * h * w..(ch + 1) * h * w];
        // Vertical pass, row by row for locality.
        for y in 0..h {
            let out = &mut dst[y * w..(y + 1) * w];
            out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                let sy = reflect(y as isize + k as isize - ri, hi);
                let src = &mid[sy * w..(sy + 1) * w];
                for (o, &v) in out.iter_mut().zip(src) {
                    *o += kv * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_shift_rotates_primaries() {
        let (r, g, b) = hue_shift(255.0, 0.0, 0.0, 1.0 / 3.0);
        assert!(r.abs() < 1e-3 && (g - 255.0).abs() < 1e-3 && b.abs() < 1e-3);
        let (r, g, b) = hue_shift(0.0, 0.0, 200.0, 1.0 / 3.0);
        assert!((r - 200.0).abs() < 1e-3 && g.abs() < 1e-3 && b.abs() < 1e-3);
        assert_eq!(hue_shift(9.0, 9.0, 9.0, 0.3), (9.0, 9.0, 9.0));
        let (r, g, b) = hue_shift(10.0, 100.0, 50.0, 1.0);
        assert!((r - 10.0).abs() < 1e-3 && (g - 100.0).abs() < 1e-3 && (b - 50.0).abs() < 1e-3);
    }

    #[test]
    fn rotate_half_turn_reverses() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut dst = Vec::new();
        rotate(&src, &mut dst, 1, 3, 4, 180.0);
        for (d, s) in dst.iter().zip(src.iter().rev()) {
            assert!((d - s).abs() < 1e-3, "{dst:?}");
        }
    }

    #[test]
    fn blur_kernel_is_clipped_and_normalised() {
        let mut buf = vec![50.0f32; 3 * 5];
        let (mut tmp, mut k) = (Vec::new(), Vec::new());
        gaussian_blur(&mut buf, &mut tmp, &mut k, 1, 3, 5, 10.0);
        assert_eq!(k.len(), 3); // radius clipped to (3 - 1) / 2
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(buf.iter().all(|v| (v - 50.0).abs() < 1e-3));
    }
}
