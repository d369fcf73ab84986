//! DINO's self-distillation loss (Caron et al., 2021): the student's softmax over K prototypes
//! should match the centred, sharpened softmax of the teacher on a *different* crop.
//!
//! ```text
//! P_t(i) = softmax((t_i − c) / τ_t)            teacher, global crops i ∈ {1, 2}
//! log P_s(j) = log_softmax(s_j / τ_s)          student, every crop j (global and local)
//! L = mean over pairs (i, j ≠ i) of  mean_n  −Σ_k P_t(i)_nk · log P_s(j)_nk
//! ```

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};

/// `teacher`: the global crops' teacher outputs `(N, K)` each (constants); `student`: every
/// crop's student outputs `(N, K)`, the global crops first in the same order; `center (K)`.
pub fn dino_loss(
    teacher: &[Tensor<2>],
    student: &[Tensor<2>],
    center: Tensor<1>,
    teacher_temp: f32,
    student_temp: f32,
) -> Tensor<1> {
    let c = center.unsqueeze_dim::<2>(0);
    let targets: Vec<Tensor<2>> = teacher
        .iter()
        .map(|t| softmax((t.clone() - c.clone()).div_scalar(teacher_temp), 1).detach())
        .collect();
    let logp: Vec<Tensor<2>> = student
        .iter()
        .map(|s| log_softmax(s.clone().div_scalar(student_temp), 1))
        .collect();
    let mut terms = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (j, lp) in logp.iter().enumerate() {
            if i != j {
                terms.push((t.clone() * lp.clone()).sum_dim(1).mean().neg());
            }
        }
    }
    let n = terms.len() as f32;
    Tensor::cat(terms, 0).sum().div_scalar(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, check_two_input_loss, rows, to_f32};
    use burn::tensor::{Device, TensorData};

    fn softmax64(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// Two global crops (the test's two inputs are the student outputs of crops 1 and 2) and
    /// one local crop; the teacher outputs and the centre are fixed.
    #[test]
    fn matches_float64() {
        let (n, k, tt, ts) = (3, 5, 0.04, 0.1);
        let mut r = Rng(21);
        let teacher: Vec<Vec<f64>> = (0..2).map(|_| r.vec(n * k)).collect();
        let local = r.vec(n * k);
        let center = r.vec(k);
        let dev = Device::flex().autodiff();
        let t = |v: &[f64]| Tensor::<2>::from_data(TensorData::new(to_f32(v), [n, k]), &dev);
        let tt_tensors: Vec<Tensor<2>> = teacher.iter().map(|v| t(v)).collect();
        let local_t = t(&local);
        let c = Tensor::<1>::from_data(TensorData::new(to_f32(&center), [k]), &dev);
        check_two_input_loss(
            n,
            k,
            22,
            |s1, s2| {
                dino_loss(
                    &tt_tensors,
                    &[s1, s2, local_t.clone()],
                    c.clone(),
                    tt as f32,
                    ts as f32,
                )
            },
            |s1, s2| {
                let students = [s1, s2, &local[..]];
                let mut total = 0.0;
                let mut pairs = 0;
                for (i, tv) in teacher.iter().enumerate() {
                    for (j, sv) in students.iter().enumerate() {
                        if i == j {
                            continue;
                        }
                        let mut l = 0.0;
                        for (tr, sr) in rows(tv, k).iter().zip(rows(sv, k)) {
                            let p = softmax64(
                                &tr.iter()
                                    .zip(&center)
                                    .map(|(a, c)| (a - c) / tt)
                                    .collect::<Vec<_>>(),
                            );
                            let q = softmax64(&sr.iter().map(|a| a / ts).collect::<Vec<_>>());
                            l -= p.iter().zip(&q).map(|(a, b)| a * b.ln()).sum::<f64>();
                        }
                        total += l / n as f64;
                        pairs += 1;
                    }
                }
                total / pairs as f64
            },
            1e-4,
        );
    }
}
