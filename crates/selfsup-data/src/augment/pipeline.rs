//! [`Pipeline`]: applies an [`AugmentConfig`] to produce normalised views.

use std::borrow::Cow;

use rayon::prelude::*;

use super::config::{AugmentConfig, CropConfig, CutoutFill};
use super::ops::{color_jitter, gaussian_blur, rotate, to_grey};
use crate::error::DataError;
use crate::image::{Image, Tap, fill_axis_taps, quantize, resample_bilinear};
use crate::rng::{SplitMix64, hash_seed};

// Stream tags: each operation draws from its own generator.
const OP_CROP: u64 = 1;
const OP_FLIP: u64 = 2;
const OP_ROTATION: u64 = 3;
const OP_JITTER: u64 = 4;
const OP_GRAYSCALE: u64 = 5;
const OP_BLUR: u64 = 6;
const OP_SOLARIZE: u64 = 7;
const OP_CUTOUT: u64 = 8;

/// Reusable buffers for one worker.
#[derive(Default)]
struct Scratch {
    /// The working image, `C x out_h x out_w`, values in 0..255.
    buf: Vec<f32>,
    tmp: Vec<f32>,
    ys: Vec<Tap>,
    xs: Vec<Tap>,
    kernel: Vec<f32>,
}

/// Produces augmented, normalised views of images at a fixed output size.
#[derive(Clone, Debug)]
pub struct Pipeline {
    cfg: AugmentConfig,
    c: usize,
    h: usize,
    w: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `1 / (255 * std)` per channel.
    scale: Vec<f32>,
    /// `-mean / std` per channel.
    offset: Vec<f32>,
}

impl Pipeline {
    /// A pipeline producing `C x out_h x out_w` views, where `C = mean.len()` (1 or 3; images
    /// with other channel counts are converted). `mean` and `std` are per channel, for pixel
    /// values scaled to `[0, 1]`. Fails when the config is invalid, the sizes are 0, or
    /// mean/std are inconsistent.
    pub fn new(
        cfg: AugmentConfig,
        out_h: usize,
        out_w: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self, DataError> {
        cfg.validate().map_err(DataError::Augment)?;
        if out_h == 0 || out_w == 0 {
            return Err(DataError::Augment(format!(
                "output size {out_h}x{out_w} must be positive"
            )));
        }
        if mean.len() != std.len() || !(mean.len() == 1 || mean.len() == 3) {
            return Err(DataError::Augment(format!(
                "mean ({} values) and std ({} values) must both have 1 or 3 values (one per channel)",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Augment(format!(
                "std {s} must be positive and finite"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Augment(format!("mean {m} must be finite")));
        }
        let scale = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let offset = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        Ok(Pipeline {
            cfg,
            c: mean.len(),
            h: out_h,
            w: out_w,
            mean,
            std,
            scale,
            offset,
        })
    }

    /// `(channels, height, width)` of the views.
    pub fn out_shape(&self) -> (usize, usize, usize) {
        (self.c, self.h, self.w)
    }

    /// The augmentation config.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Per-channel normalisation mean.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel normalisation standard deviation.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// One augmented view (u8, at the output size), deterministic from
    /// `(seed, epoch, index, view)`.
    pub fn view(&self, img: &Image, seed: u64, epoch: u64, index: u64, view: u32) -> Image {
        let mut s = Scratch::default();
        self.augment_into(img, seed, epoch, index, view, &mut s);
        Image {
            channels: self.c,
            height: self.h,
            width: self.w,
            pixels: s.buf.iter().map(|&v| quantize(v)).collect(),
        }
    }

    /// Writes `img`, resized to the output size if needed (bilinear) and normalised
    /// (`(x / 255 - mean) / std`), into `out` as f32 CHW; no augmentation.
    ///
    /// Panics when `out.len()` is not `C * out_h * out_w`.
    pub fn normalise_into(&self, img: &Image, out: &mut [f32]) {
        let n = self.c * self.h * self.w;
        assert_eq!(
            out.len(),
            n,
            "normalise_into: output buffer has {} values, expected {n} ({}x{}x{})",
            out.len(),
            self.c,
            self.h,
            self.w
        );
        let img = coerce_channels(img, self.c);
        let img: Cow<Image> = if (img.height, img.width) == (self.h, self.w) {
            img
        } else {
            Cow::Owned(img.resize(self.h, self.w))
        };
        let plane = self.h * self.w;
        for c in 0..self.c {
            let (sc, off) = (self.scale[c], self.offset[c]);
            for (o, &v) in out[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(&img.pixels[c * plane..(c + 1) * plane])
            {
                *o = v as f32 * sc + off;
            }
        }
    }

    /// The training batch: for each `i` in `indices`, `n_views` augmented views of `images[i]`
    /// (view `v` of image `i` uses `(seed, epoch, i, v)`). Returns `n_views` buffers, each
    /// `indices.len() * C * out_h * out_w` normalised f32 values (image-major, CHW), computed in
    /// parallel and deterministic. Equal to normalising [`Pipeline::view`].
    ///
    /// Panics when an index is out of range.
    pub fn views_batch(
        &self,
        images: &[Image],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        self.views_batch_from(images, indices, seed, epoch, 0, n_views)
    }

    /// [`Pipeline::views_batch`] for view numbers `first..first + n_views` (multi-crop: the
    /// local crops continue the numbering of the global ones, so each draws its own randomness).
    pub fn views_batch_from(
        &self,
        images: &[Image],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        first: u32,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        self.views_of(
            |k| (&images[indices[k]], indices[k]),
            indices.len(),
            seed,
            epoch,
            first,
            n_views,
        )
    }

    /// [`Pipeline::views_batch_from`] of images already picked out (decoded from disk by a
    /// streaming loader): `batch[k]` is image `indices[k]` of the data set, so its views are
    /// those [`Pipeline::views_batch_from`] makes from the whole set.
    ///
    /// Panics when the two lengths differ.
    pub fn views_of_batch(
        &self,
        batch: &[Image],
        indices: &[usize],
        seed: u64,
        epoch: u64,
        first: u32,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        assert_eq!(batch.len(), indices.len(), "one index per image");
        self.views_of(
            |k| (&batch[k], indices[k]),
            batch.len(),
            seed,
            epoch,
            first,
            n_views,
        )
    }

    /// The views of `n` images, image `k` and its index in the data set given by `at(k)`.
    fn views_of<'a>(
        &self,
        at: impl Fn(usize) -> (&'a Image, usize) + Sync,
        n: usize,
        seed: u64,
        epoch: u64,
        first: u32,
        n_views: u32,
    ) -> Vec<Vec<f32>> {
        let chw = self.c * self.h * self.w;
        (first..first + n_views)
            .map(|v| {
                let mut out = vec![0f32; n * chw];
                out.par_chunks_mut(chw).enumerate().for_each_init(
                    Scratch::default,
                    |s, (k, dst)| {
                        let (img, i) = at(k);
                        self.augment_into(img, seed, epoch, i as u64, v, s);
                        self.write_normalised(&s.buf, dst);
                    },
                );
                out
            })
            .collect()
    }

    /// The un-augmented normalised batch (for evaluation): `indices.len() * C * out_h * out_w`
    /// values. Panics when an index is out of range.
    pub fn plain_batch(&self, images: &[Image], indices: &[usize]) -> Vec<f32> {
        let chw = self.c * self.h * self.w;
        let mut out = vec![0f32; indices.len() * chw];
        out.par_chunks_mut(chw)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| self.normalise_into(&images[i], dst));
        out
    }

    /// Quantises the working buffer like [`Pipeline::view`] and normalises it into `dst`.
    fn write_normalised(&self, buf: &[f32], dst: &mut [f32]) {
        let plane = self.h * self.w;
        for c in 0..self.c {
            let (sc, off) = (self.scale[c], self.offset[c]);
            for (o, &v) in dst[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(&buf[c * plane..(c + 1) * plane])
            {
                *o = quantize(v) as f32 * sc + off;
            }
        }
    }

    /// Runs the whole pipeline; the result is left in `s.buf` (values in 0..255).
    fn augment_into(
        &self,
        img: &Image,
        seed: u64,
        epoch: u64,
        index: u64,
        view: u32,
        s: &mut Scratch,
    ) {
        let base = hash_seed(&[seed, epoch, index, view as u64]);
        let rng = |op: u64| SplitMix64::new(hash_seed(&[base, op]));
        let img = coerce_channels(img, self.c);
        let (c, h, w) = (self.c, self.h, self.w);
        let cfg = &self.cfg;

        // Crop (or plain resize) into the working buffer.
        let mut region = (0, 0, img.height, img.width);
        if let Some(cc) = &cfg.crop {
            let mut r = rng(OP_CROP);
            if r.bernoulli(cc.p) {
                region = crop_params(img.height, img.width, cc, &mut r);
            }
        }
        s.buf.clear();
        s.buf.resize(c * h * w, 0.0);
        if region == (0, 0, h, w) && (img.height, img.width) == (h, w) {
            for (d, &v) in s.buf.iter_mut().zip(&img.pixels) {
                *d = v as f32;
            }
        } else {
            let (y0, x0, rh, rw) = region;
            fill_axis_taps(y0, rh, h, &mut s.ys);
            fill_axis_taps(x0, rw, w, &mut s.xs);
            resample_bilinear(
                &img.pixels,
                c,
                img.height,
                img.width,
                &s.ys,
                &s.xs,
                &mut s.buf,
            );
        }

        if let Some(fc) = &cfg.flip
            && rng(OP_FLIP).bernoulli(fc.p)
        {
            for row in s.buf.chunks_exact_mut(w) {
                row.reverse();
            }
        }
        if let Some(rc) = &cfg.rotation {
            let mut r = rng(OP_ROTATION);
            if r.bernoulli(rc.p) {
                let angle = r.uniform(-rc.degrees, rc.degrees);
                rotate(&s.buf, &mut s.tmp, c, h, w, angle);
                std::mem::swap(&mut s.buf, &mut s.tmp);
            }
        }
        if let Some(jc) = &cfg.color_jitter {
            let mut r = rng(OP_JITTER);
            if r.bernoulli(jc.p) {
                color_jitter(&mut s.buf, c, h * w, jc, &mut r);
            }
        }
        if let Some(gc) = &cfg.grayscale
            && rng(OP_GRAYSCALE).bernoulli(gc.p)
            && c == 3
        {
            to_grey(&mut s.buf, h * w);
        }
        if let Some(bc) = &cfg.blur {
            let mut r = rng(OP_BLUR);
            if r.bernoulli(bc.p) {
                let sigma = r.uniform(bc.sigma[0], bc.sigma[1]);
                gaussian_blur(&mut s.buf, &mut s.tmp, &mut s.kernel, c, h, w, sigma);
            }
        }
        if let Some(sc) = &cfg.solarize
            && rng(OP_SOLARIZE).bernoulli(sc.p)
        {
            let t = sc.threshold;
            for v in s.buf.iter_mut() {
                if *v >= t {
                    *v = 255.0 - *v;
                }
            }
        }
        if let Some(cc) = &cfg.cutout {
            let mut r = rng(OP_CUTOUT);
            if r.bernoulli(cc.p) {
                let frac = r.uniform(cc.size[0], cc.size[1]);
                let side = ((frac * h.min(w) as f32).round() as usize).max(1);
                let (cy, cx) = (r.below(h), r.below(w));
                let y0 = cy.saturating_sub(side / 2);
                let x0 = cx.saturating_sub(side / 2);
                let (y1, x1) = ((y0 + side).min(h), (x0 + side).min(w));
                for ch in 0..c {
                    let fill = match cc.fill {
                        CutoutFill::Zero => 0.0,
                        CutoutFill::Mean => (self.mean[ch] * 255.0).clamp(0.0, 255.0),
                    };
                    for y in y0..y1 {
                        let row = (ch * h + y) * w;
                        s.buf[row + x0..row + x1].fill(fill);
                    }
                }
            }
        }
    }
}

/// The image with exactly `c` channels (borrowed when it already has them). Conversions the
/// image type does not support replicate or drop channels.
fn coerce_channels(img: &Image, c: usize) -> Cow<'_, Image> {
    if img.channels == c {
        return Cow::Borrowed(img);
    }
    match img.to_channels(c) {
        Ok(i) => Cow::Owned(i),
        Err(_) => {
            let n = img.height * img.width;
            let mut pixels = Vec::with_capacity(c * n);
            for ch in 0..c {
                pixels.extend_from_slice(img.plane(ch.min(img.channels - 1)));
            }
            Cow::Owned(Image {
                channels: c,
                height: img.height,
                width: img.width,
                pixels,
            })
        }
    }
}

/// torchvision `RandomResizedCrop.get_params`: `(top, left, height, width)`.
fn crop_params(
    h: usize,
    w: usize,
    cfg: &CropConfig,
    r: &mut SplitMix64,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lr0, lr1) = (cfg.ratio[0].ln(), cfg.ratio[1].ln());
    for _ in 0..10 {
        let target = area * r.uniform(cfg.scale[0], cfg.scale[1]);
        let aspect = r.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = r.range_inclusive(0, h - ch);
            let left = r.range_inclusive(0, w - cw);
            return (top, left, ch, cw);
        }
    }
    // Fallback: centre crop at the nearest allowed aspect ratio.
    let in_ratio = w as f32 / h as f32;
    let (ch, cw) = if in_ratio < cfg.ratio[0] {
        (((w as f32 / cfg.ratio[0]).round() as usize).clamp(1, h), w)
    } else if in_ratio > cfg.ratio[1] {
        (h, ((h as f32 * cfg.ratio[1]).round() as usize).clamp(1, w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_params_respect_bounds() {
        let cfg = CropConfig::default();
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let (t, l, h, w) = crop_params(20, 30, &cfg, &mut r);
            assert!(h >= 1 && w >= 1 && t + h <= 20 && l + w <= 30);
        }
        // Impossible ratios fall back to a centre crop at the nearest ratio.
        let tall = CropConfig {
            p: 1.0,
            scale: [1.0, 1.0],
            ratio: [3.0, 4.0],
        };
        assert_eq!(crop_params(10, 10, &tall, &mut r), (3, 0, 3, 10));
    }
}
