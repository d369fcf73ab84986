//! Masking and corruption that make the inputs of masked and denoising methods: MAE's random
//! patch masking and the denoising autoencoder's noise. Every draw is a pure function of the
//! random stream given (methods derive it from the run's seed and the step), so a resumed run
//! masks exactly as an uninterrupted one.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// MAE's per-sample random masking of `num` patches: each sample keeps `keep` patches chosen
/// by a random shuffle of its patch indices.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchMask {
    /// Samples.
    pub n: usize,
    /// Patches per sample (L).
    pub num: usize,
    /// Visible patches per sample (K).
    pub keep: usize,
    /// `n × keep`: the visible patches of each sample, in shuffled order.
    pub ids_keep: Vec<usize>,
    /// `n × num`: where each patch sits in the shuffled order (the inverse permutation), so
    /// that `shuffled[ids_restore[i]]` is patch i.
    pub ids_restore: Vec<usize>,
    /// `n × num`: 1.0 for a masked (hidden) patch, 0.0 for a visible one, in patch order.
    pub mask: Vec<f32>,
}

impl PatchMask {
    /// The masks of samples `rows` (for a data-parallel part of a step).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> PatchMask {
        assert!(rows.end <= self.n, "rows past the batch");
        let (k, l) = (self.keep, self.num);
        PatchMask {
            n: rows.len(),
            num: l,
            keep: k,
            ids_keep: self.ids_keep[rows.start * k..rows.end * k].to_vec(),
            ids_restore: self.ids_restore[rows.start * l..rows.end * l].to_vec(),
            mask: self.mask[rows.start * l..rows.end * l].to_vec(),
        }
    }
}

/// How many of `num` patches stay visible at mask `ratio` (MAE: `int(L · (1 − ratio))`), at
/// least one.
pub fn visible_count(num: usize, ratio: f32) -> usize {
    (((num as f64) * (1.0 - ratio as f64)).floor() as usize).clamp(1, num)
}

/// Draws the masks of `n` samples of `num` patches at mask `ratio` from `rng`.
pub fn random_patch_mask(n: usize, num: usize, ratio: f32, rng: &mut SplitMix64) -> PatchMask {
    let keep = visible_count(num, ratio);
    let mut ids_keep = Vec::with_capacity(n * keep);
    let mut ids_restore = vec![0; n * num];
    let mut mask = vec![1.0f32; n * num];
    let mut order: Vec<usize> = Vec::with_capacity(num);
    for s in 0..n {
        order.clear();
        order.extend(0..num);
        rng.shuffle(&mut order);
        for (pos, &patch) in order.iter().enumerate() {
            ids_restore[s * num + patch] = pos;
            if pos < keep {
                mask[s * num + patch] = 0.0;
            }
        }
        ids_keep.extend_from_slice(&order[..keep]);
    }
    PatchMask {
        n,
        num,
        keep,
        ids_keep,
        ids_restore,
        mask,
    }
}

/// The corruption of a denoising autoencoder, on pixels in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    /// Additive Gaussian noise of standard deviation `level`, clipped to [0, 1].
    #[default]
    Gaussian,
    /// Masking noise (pixel dropout): each value is set to 0 with probability `level`.
    Mask,
    /// Salt and pepper: each pixel (all its channels) is set to 0 or 1 with probability
    /// `level`, either with even odds.
    SaltPepper,
}

impl Noise {
    /// Checks `level` for this noise: a standard deviation > 0, or a probability in (0, 1).
    pub fn check_level(self, level: f32) -> Result<(), String> {
        let ok = match self {
            Self::Gaussian => level.is_finite() && level > 0.0,
            Self::Mask | Self::SaltPepper => level > 0.0 && level < 1.0,
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                Self::Gaussian => format!("a standard deviation > 0, got {level}"),
                _ => format!("a probability in (0, 1), got {level}"),
            })
        }
    }

    /// Corrupts `pixels` (`n` images of `c` channels of `hw` values each, in [0, 1]) in place.
    pub fn apply(self, pixels: &mut [f32], c: usize, hw: usize, level: f32, rng: &mut SplitMix64) {
        match self {
            Self::Gaussian => {
                let mut i = 0;
                while i < pixels.len() {
                    // Box–Muller: two normals per pair of uniforms
                    let u1 = rng.next_f64().max(1e-300);
                    let u2 = rng.next_f64();
                    let r = (-2.0 * u1.ln()).sqrt();
                    let t = std::f64::consts::TAU * u2;
                    for z in [r * t.cos(), r * t.sin()] {
                        if i < pixels.len() {
                            pixels[i] = (pixels[i] + level * z as f32).clamp(0.0, 1.0);
                            i += 1;
                        }
                    }
                }
            }
            Self::Mask => {
                for v in pixels.iter_mut() {
                    if rng.bernoulli(level) {
                        *v = 0.0;
                    }
                }
            }
            Self::SaltPepper => {
                let per_image = c * hw;
                for img in pixels.chunks_mut(per_image.max(1)) {
                    for p in 0..hw {
                        if rng.bernoulli(level) {
                            let v = if rng.bernoulli(0.5) { 1.0 } else { 0.0 };
                            for ch in 0..c {
                                img[ch * hw + p] = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_exactly_the_share_per_sample_and_restores_order() {
        let mut rng = SplitMix64::new(3);
        for (num, ratio, keep) in [(64, 0.75, 16), (16, 0.5, 8), (49, 0.75, 12), (4, 0.99, 1)] {
            let m = random_patch_mask(7, num, ratio, &mut rng);
            assert_eq!(m.keep, keep);
            for s in 0..7 {
                let mask = &m.mask[s * num..(s + 1) * num];
                assert_eq!(mask.iter().filter(|&&v| v == 1.0).count(), num - keep);
                let kept = &m.ids_keep[s * keep..(s + 1) * keep];
                for &p in kept {
                    assert_eq!(mask[p], 0.0, "a kept patch is visible");
                }
                // un-shuffling: the shuffled order is kept ++ masked; restore maps it back
                let restore = &m.ids_restore[s * num..(s + 1) * num];
                let mut shuffled = vec![usize::MAX; num];
                for p in 0..num {
                    shuffled[restore[p]] = p;
                }
                assert_eq!(&shuffled[..keep], kept);
                let restored: Vec<usize> = (0..num).map(|p| shuffled[restore[p]]).collect();
                assert_eq!(restored, (0..num).collect::<Vec<_>>());
            }
        }
        // the same stream gives the same masks; another gives others
        let a = random_patch_mask(4, 64, 0.75, &mut SplitMix64::new(9));
        let b = random_patch_mask(4, 64, 0.75, &mut SplitMix64::new(9));
        let c = random_patch_mask(4, 64, 0.75, &mut SplitMix64::new(10));
        assert_eq!(a, b);
        assert_ne!(a.ids_keep, c.ids_keep);
    }

    #[test]
    fn noise_levels_are_what_they_say() {
        let n = 200_000;
        // Gaussian on mid-grey (no clipping at σ = 0.1 in practice): std ≈ level
        let mut x = vec![0.5f32; n];
        Noise::Gaussian.apply(&mut x, 1, n, 0.1, &mut SplitMix64::new(1));
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 2e-3, "{mean}");
        assert!((var.sqrt() - 0.1).abs() < 2e-3, "{}", var.sqrt());
        // masking: the share of zeroed values ≈ level
        for level in [0.1f32, 0.3, 0.5] {
            let mut x = vec![0.7f32; n];
            Noise::Mask.apply(&mut x, 1, n, level, &mut SplitMix64::new(2));
            let share = x.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            assert!((share - level as f64).abs() < 5e-3, "{level}: {share}");
        }
        // salt and pepper: share of changed pixels ≈ level, half salt, whole pixels
        let (c, hw) = (3, 1000);
        let mut x = vec![0.5f32; 100 * c * hw];
        Noise::SaltPepper.apply(&mut x, c, hw, 0.2, &mut SplitMix64::new(3));
        let (mut salt, mut pepper) = (0, 0);
        for img in x.chunks(c * hw) {
            for p in 0..hw {
                let v = img[p];
                assert!((0..c).all(|ch| img[ch * hw + p] == v), "whole pixels");
                salt += (v == 1.0) as usize;
                pepper += (v == 0.0) as usize;
            }
        }
        let total = (100 * hw) as f64;
        assert!(((salt + pepper) as f64 / total - 0.2).abs() < 5e-3);
        assert!((salt as f64 / (salt + pepper) as f64 - 0.5).abs() < 0.02);
        assert!(Noise::Mask.check_level(1.0).is_err());
        assert!(Noise::Gaussian.check_level(0.0).is_err());
        assert!(Noise::SaltPepper.check_level(0.1).is_ok());
    }
}
