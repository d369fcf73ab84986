//! Helpers that let plain Rust loops in our kernels compile to wide vector code.
//!
//! The workspace is built for the baseline x86-64 target (SSE2), so that the binary runs on
//! any machine. [`with_avx2`] runs a loop body compiled with AVX-512F, or else AVX2 and FMA,
//! when the CPU has them (checked once, cached by the standard library); the body and the `#[inline(always)]`
//! helpers below are inlined into that copy. No `mul_add` is used, so both copies give the
//! same bits.

/// Whether the CPU has AVX-512F (checked once, cached by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// Runs `f`, compiled for AVX-512F (or else AVX2 + FMA) when the CPU supports it. Call it
/// inside a parallel task, around the innermost loops: functions that `f` calls without
/// inlining (rayon, a library) do not inherit the features.
#[inline(always)]
pub fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports the features `run` is compiled for (checked above).
            return unsafe { run(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports the features `run` is compiled for (checked above).
            return unsafe { run(f) };
        }
    }
    f()
}

/// Defines `pub fn $name(args) -> R` that calls the `#[inline(always)]` function `$body` with
/// the same arguments, from a copy compiled for AVX-512F (or else AVX2 + FMA) when the CPU has
/// them. Use it for large loop bodies, which LLVM may not inline into [`with_avx2`]'s closure.
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = $body:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if $crate::kernels::simd::has_avx512() {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn wide512($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    // SAFETY: the CPU supports the features `wide512` is compiled for.
                    return unsafe { wide512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn wide($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    // SAFETY: the CPU supports the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;

/// `even[j] = src[2j]`, `odd[j] = src[2j + 1]` (`src` twice as long as each), 16 pairs per
/// AVX-512 permute where the CPU has it.
pub fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(
        odd.len() == n && src.len() == 2 * n,
        "deinterleave: lengths"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked); the lengths were asserted above
        done = unsafe { deinterleave512(src, even, odd) };
    }
    for j in done..n {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
}

/// The whole blocks of 16 pairs of [`deinterleave`]; returns how many pairs it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave512(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let blocks = even.len() / 16;
    for k in 0..blocks {
        // SAFETY: pairs 16k..16k + 16 lie inside `src` (32 floats), `even`, `odd` (16 each)
        unsafe {
            let a = _mm512_loadu_ps(src.as_ptr().add(32 * k));
            let b = _mm512_loadu_ps(src.as_ptr().add(32 * k + 16));
            _mm512_storeu_ps(
                even.as_mut_ptr().add(16 * k),
                _mm512_permutex2var_ps(a, ie, b),
            );
            _mm512_storeu_ps(
                odd.as_mut_ptr().add(16 * k),
                _mm512_permutex2var_ps(a, io, b),
            );
        }
    }
    blocks * 16
}

/// [`deinterleave`] undone: `dst[2j] = even[j]`, `dst[2j + 1] = odd[j]`; writes every element
/// of `dst`.
pub fn interleave(dst: &mut [std::mem::MaybeUninit<f32>], even: &[f32], odd: &[f32]) {
    let n = even.len();
    assert!(odd.len() == n && dst.len() == 2 * n, "interleave: lengths");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked); the lengths were asserted above
        done = unsafe { interleave512(dst, even, odd) };
    }
    for j in done..n {
        dst[2 * j].write(even[j]);
        dst[2 * j + 1].write(odd[j]);
    }
}

/// The whole blocks of 16 pairs of [`interleave`]; returns how many pairs it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave512(
    dst: &mut [std::mem::MaybeUninit<f32>],
    even: &[f32],
    odd: &[f32],
) -> usize {
    use std::arch::x86_64::*;
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let blocks = even.len() / 16;
    let out = dst.as_mut_ptr() as *mut f32;
    for k in 0..blocks {
        // SAFETY: pairs 16k..16k + 16 lie inside `even`, `odd` (16 each) and `dst` (32 floats;
        // `MaybeUninit<f32>` has the layout of `f32`)
        unsafe {
            let a = _mm512_loadu_ps(even.as_ptr().add(16 * k));
            let b = _mm512_loadu_ps(odd.as_ptr().add(16 * k));
            _mm512_storeu_ps(out.add(32 * k), _mm512_permutex2var_ps(a, lo, b));
            _mm512_storeu_ps(out.add(32 * k + 16), _mm512_permutex2var_ps(a, hi, b));
        }
    }
    blocks * 16
}

/// `Σ a_i·b_i` over equally long slices, in eight interleaved partial sums (a fixed order, so
/// the result does not depend on the vector width).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for t in 0..8 {
            acc[t] += x[t] * y[t];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `Σ a_i`, in the same fixed order as [`dot`].
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let c = a.chunks_exact(8);
    let r = c.remainder();
    for x in c {
        for t in 0..8 {
            acc[t] += x[t];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in r {
        s += x;
    }
    s
}

/// `y += a·x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts (Cody–Waite): `LN2_HI` has its low 12 bits zero, so `n·LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `eˣ` for f32 in straight-line arithmetic that vectorises (no call, no branch): `x` clamped
/// to [−87.3, 88.3], `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)`, `|r| ≤ ln2/2`, `eʳ` by its
/// degree-6 Taylor polynomial (truncation ≤ 1.2·10⁻⁷ relative), `2ⁿ` built in the exponent
/// bits. Measured against f64 `exp` in the tests: within 3 ulp. Below −87.3 it returns
/// about 1.2·10⁻³⁸ instead of a smaller number or 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // n as an integer from t's mantissa bits (an `as i32` cast saturates and does not vectorise)
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let bits = ((ni + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_f64() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let e = exp(x) as f64;
            let r = (x as f64).exp();
            worst = worst.max(((e - r) / r).abs());
        }
        // 3 ulp of f32 at the top of a binade
        assert!(worst < 3.6e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.3));
        assert!(exp(-1000.0) < 1.3e-38);
        assert!(exp(0.0) == 1.0);
        assert!(exp(1000.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn dot_sum_and_axpy_match_plain_loops() {
        for len in [0, 1, 7, 8, 9, 32, 65] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let d: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - d).abs() < 1e-5);
            let s: f64 = a.iter().map(|&x| x as f64).sum();
            assert!((sum(&a) as f64 - s).abs() < 1e-5);
            let mut y = b.clone();
            axpy(&mut y, 2.0, &a);
            for i in 0..len {
                assert_eq!(y[i], b[i] + 2.0 * a[i]);
            }
            assert_eq!(with_avx2(|| dot(&a, &b)), dot(&a, &b));
        }
    }

    /// The permutes (16 pairs at a time) and the scalar tail agree with the definition, and
    /// `interleave` undoes `deinterleave`.
    #[test]
    fn deinterleave_and_interleave() {
        for n in [0, 5, 16, 37] {
            let src: Vec<f32> = (0..2 * n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let (mut even, mut odd) = (vec![0.0; n], vec![0.0; n]);
            deinterleave(&src, &mut even, &mut odd);
            for j in 0..n {
                assert_eq!(
                    (even[j], odd[j]),
                    (src[2 * j], src[2 * j + 1]),
                    "n {n}, pair {j}"
                );
            }
            let mut back = vec![std::mem::MaybeUninit::new(f32::NAN); 2 * n];
            interleave(&mut back, &even, &odd);
            // SAFETY: every element was initialised above
            let back: Vec<f32> = back.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(back, src, "n {n}");
        }
    }
}
