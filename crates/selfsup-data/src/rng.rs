//! A small, fast, deterministic random number generator (SplitMix64) and seed hashing.
//!
//! Everything random in this crate is derived from explicit seeds through these functions, so
//! results never depend on threads, scheduling or global state.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a strong 64-bit mixer (bijective).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of integers into one seed; order matters.
pub fn hash_seed(parts: &[u64]) -> u64 {
    let mut h = mix64(0x5EED_0F5E_1F5E_ED00 ^ parts.len() as u64);
    for (i, &p) in parts.iter().enumerate() {
        h = mix64(h ^ mix64(p.wrapping_add(GOLDEN.wrapping_mul(i as u64 + 1))));
    }
    h
}

/// SplitMix64 generator (Steele, Lea & Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the hash of `parts`.
    pub fn from_parts(parts: &[u64]) -> Self {
        SplitMix64::new(hash_seed(parts))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `[lo, hi)` (returns `lo` when `hi <= lo`).
    #[inline]
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        if hi <= lo {
            return lo;
        }
        let v = lo + (hi - lo) * self.next_f32();
        if v >= hi { lo } else { v }
    }

    /// True with probability `p`.
    #[inline]
    pub fn bernoulli(&mut self, p: f32) -> bool {
        if p >= 1.0 {
            // Still draw, so that the stream does not depend on `p`.
            self.next_u64();
            true
        } else {
            self.next_f32() < p
        }
    }

    /// Uniform integer in `[0, n)`; returns 0 when `n == 0`.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform integer in `[lo, hi]` (inclusive); returns `lo` when `hi <= lo`.
    #[inline]
    pub fn range_inclusive(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let f = a.next_f32();
            b.next_f32();
            assert!((0.0..1.0).contains(&f));
            let k = a.below(10);
            b.below(10);
            assert!(k < 10);
        }
        assert_ne!(hash_seed(&[1, 2]), hash_seed(&[2, 1]));
        assert_ne!(hash_seed(&[0]), hash_seed(&[0, 0]));
    }

    #[test]
    fn shuffle_is_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(3).shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
