//! Helpers shared by the unit tests: a seeded generator and float64 references.
#![cfg(test)]

/// A tiny deterministic generator (SplitMix64) so that tests need no RNG crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Central finite-difference gradient of `f` at `x`.
pub fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + h;
            let fp = f(&x);
            x[i] = orig - h;
            let fm = f(&x);
            x[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

pub fn assert_close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x as f64 - y).abs();
        assert!(
            err <= tol * (1.0 + y.abs()),
            "{what}[{i}]: got {x}, expected {y} (error {err})"
        );
    }
}

/// Checks a loss of two `(n, d)` inputs against a float64 reference: the value, and both
/// gradients against central differences of the reference.
pub fn check_two_input_loss(
    n: usize,
    d: usize,
    seed: u64,
    loss: impl Fn(burn::tensor::Tensor<2>, burn::tensor::Tensor<2>) -> burn::tensor::Tensor<1>,
    reference: impl Fn(&[f64], &[f64]) -> f64,
    tol: f64,
) {
    use burn::tensor::{Device, Tensor, TensorData};
    let mut rng = Rng(seed);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    let dev = Device::flex().autodiff();
    let ta = Tensor::<2>::from_data(TensorData::new(to_f32(&a), [n, d]), &dev).require_grad();
    let tb = Tensor::<2>::from_data(TensorData::new(to_f32(&b), [n, d]), &dev).require_grad();
    let l = loss(ta.clone(), tb.clone());
    let value = l.clone().into_scalar::<f32>();
    assert_close(&[value], &[reference(&a, &b)], tol, "loss");
    let grads = l.backward();
    let grad = |t: &Tensor<2>| -> Vec<f32> {
        t.grad(&grads)
            .map(|g| g.into_data().try_to_vec::<f32>().expect("f32"))
            .unwrap_or_else(|| vec![0.0; n * d])
    };
    let (ga, gb) = (grad(&ta), grad(&tb));
    assert_close(
        &ga,
        &numeric_grad(&a, |x| reference(x, &b)),
        tol * 10.0,
        "dL/da",
    );
    assert_close(
        &gb,
        &numeric_grad(&b, |x| reference(&a, x)),
        tol * 10.0,
        "dL/db",
    );
}

/// Rows of a row-major `(n, d)` matrix.
pub fn rows(x: &[f64], d: usize) -> Vec<&[f64]> {
    x.chunks(d).collect()
}

/// `x / |x|` in float64.
pub fn unit(x: &[f64]) -> Vec<f64> {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    x.iter().map(|v| v / n).collect()
}

/// The dot product in float64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `ln Σ exp(x)`, shifted by the maximum.
pub fn lse(xs: &[f64]) -> f64 {
    let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}
