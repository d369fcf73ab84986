//! Weighted k-nearest-neighbour classification on frozen features (Wu et al., 2018, as used by
//! InstDisc, MoCo and DINO): cosine similarity, the k most similar training samples vote for
//! their class with weight `exp(s / T)`. Computed in chunks of test rows so that memory stays
//! bounded by `chunk × n_train` similarities whatever the data set size.

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

pub use crate::recipe::eval::KnnConfig;

/// Top-1 and top-5 accuracy (top-5 only with ≥ 5 classes), in percent.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnResult {
    pub top1: f64,
    pub top5: Option<f64>,
}

fn normalised(x: &[f32], n: usize, d: usize, device: &Device) -> Tensor<2> {
    let t = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, d]), device);
    crate::loss::l2_normalize(t)
}

/// `train: (n_train × d)` row-major features with `train_labels`, `test: (n_test × d)` with
/// `test_labels`; labels in `0..num_classes`.
#[allow(clippy::too_many_arguments)]
pub fn knn_classify(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    num_classes: usize,
    cfg: &KnnConfig,
    device: &Device,
) -> KnnResult {
    let n_train = train_labels.len();
    let n_test = test_labels.len();
    assert_eq!(train.len(), n_train * d, "train features");
    assert_eq!(test.len(), n_test * d, "test features");
    let k = cfg.k.min(n_train).max(1);
    let chunk = cfg.chunk.max(1);
    // the hits (top-1, top-5) of a chunk of test rows starting at `start`, from their
    // similarities `sim (rows, n_train)`
    let score = |sim: &[f32], start: usize| -> (usize, usize) {
        let rows = sim.len() / n_train.max(1);
        sim.par_chunks(n_train)
            .zip(&test_labels[start..start + rows])
            .map(|(row, &label)| {
                let votes = vote(row, train_labels, k, cfg.temperature, num_classes);
                // classes that received votes, most voted first (ties: lower class index)
                let mut order: Vec<usize> = (0..num_classes).filter(|&c| votes[c] > 0.0).collect();
                order.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
                let l = label as usize;
                (
                    (order.first() == Some(&l)) as usize,
                    order.iter().take(5).any(|&c| c == l) as usize,
                )
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (mut hit1, mut hit5) = (0usize, 0usize);
    if crate::kernels::ext::on_flex(device) {
        // on the CPU: one GEMM per chunk straight on the normalised rows (train read as its
        // transpose through strides) into one reused buffer; through Burn each chunk copied
        // the transposed training matrix and the similarities (10 % of the line's profile)
        let rows_of = |x: &[f32], n: usize| -> Vec<f32> {
            normalised(x, n, d, device)
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 features")
        };
        let train_n = rows_of(train, n_train);
        let mut sim = vec![0.0f32; chunk.min(n_test) * n_train];
        for start in (0..n_test).step_by(chunk) {
            let rows = chunk.min(n_test - start);
            let q = rows_of(&test[start * d..(start + rows) * d], rows);
            let sim = &mut sim[..rows * n_train];
            crate::kernels::matmul::gemm(
                rows, n_train, d, sim, false, &q, 1, d, &train_n, d, 1, true,
            );
            let (h1, h5) = score(sim, start);
            hit1 += h1;
            hit5 += h5;
        }
    } else {
        // trainᵀ: (d, n_train), unit columns
        let train_t = normalised(train, n_train, d, device).transpose();
        for start in (0..n_test).step_by(chunk) {
            let rows = chunk.min(n_test - start);
            let q = normalised(&test[start * d..(start + rows) * d], rows, d, device);
            // sim: (rows, n_train)
            let sim = q.matmul(train_t.clone()).into_data();
            let (h1, h5) = score(sim.as_slice::<f32>().expect("f32 similarities"), start);
            hit1 += h1;
            hit5 += h5;
        }
    }
    let pct = |h: usize| 100.0 * h as f64 / n_test.max(1) as f64;
    KnnResult {
        top1: pct(hit1),
        top5: (num_classes >= 5).then(|| pct(hit5)),
    }
}

/// Class votes of one query: the k largest similarities, each weighted by exp(s/T).
fn vote(row: &[f32], labels: &[u32], k: usize, t: f32, num_classes: usize) -> Vec<f64> {
    let mut votes = vec![0.0f64; num_classes];
    for (s, i) in top_k(row, k) {
        votes[labels[i as usize] as usize] += ((s / t) as f64).exp();
    }
    votes
}

/// The `k` largest values of `row` with their indices, in no particular order (of equal values
/// at the k-th place, any). One pass that keeps a buffer of candidates above a threshold —
/// the k-th largest of the buffer each time it fills — so that nearly every value costs one
/// comparison: a selection over the whole row (`select_nth_unstable`, 21 % of the kNN line's
/// profile) moves every value several times.
fn top_k(row: &[f32], k: usize) -> Vec<(f32, u32)> {
    let by_value = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
    if k >= row.len() {
        return row
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
    }
    let cap = (4 * k).max(1024);
    let mut buf: Vec<(f32, u32)> = Vec::with_capacity(cap + 1);
    let mut thr = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        // NaN never passes (it is no one's neighbour); the first k values always do
        if v > thr || (buf.len() < k && !v.is_nan()) {
            buf.push((v, i as u32));
            if buf.len() == cap {
                buf.select_nth_unstable_by(k - 1, by_value);
                buf.truncate(k);
                thr = buf.iter().map(|p| p.0).fold(f32::INFINITY, f32::min);
            }
        }
    }
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, by_value);
        buf.truncate(k);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffered selection picks the values a full sort picks, for every k (sizes around
    /// the buffer's, repeated values, NaNs).
    #[test]
    fn top_k_is_the_k_largest() {
        let mut r = crate::testutil::Rng(5);
        for n in [1usize, 7, 1000, 1023, 1024, 1025, 5000] {
            let mut row: Vec<f32> = (0..n)
                .map(|_| (r.uniform() * 10.0).round() as f32)
                .collect();
            if n > 10 {
                row[3] = f32::NAN;
            }
            let mut sorted: Vec<f32> = row.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for k in [1usize, 5, 200, 300, 999, n] {
                let k = k.min(n);
                let got = top_k(&row, k);
                if k < n {
                    assert_eq!(got.len(), k.min(sorted.len()), "n {n} k {k}");
                }
                let mut vals: Vec<f32> = got.iter().map(|p| p.0).collect();
                vals.sort_by(|a, b| b.total_cmp(a));
                if k < n {
                    assert_eq!(vals, sorted[..k.min(sorted.len())], "n {n} k {k}");
                }
                for &(v, i) in &got {
                    assert!(v.to_bits() == row[i as usize].to_bits(), "index {i}");
                }
            }
        }
    }

    #[test]
    fn tiny_hand_made_case() {
        let dev = Device::flex();
        // train: two points of class 0 near (1,0), one of class 1 at (0,1), one class 1 at (-1, 0.1)
        let train = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, -1.0, 0.1];
        let labels = [0, 0, 1, 1];
        // query (0.2, 1): nearest is (0,1) class 1
        // query (1, -0.1): nearest are class 0
        let test = [0.2, 1.0, 1.0, -0.1];
        let cfg = KnnConfig {
            k: 1,
            temperature: 0.1,
            chunk: 1,
        };
        let r = knn_classify(&train, &labels, &test, &[1, 0], 2, 2, &cfg, &dev);
        assert_eq!(r.top1, 100.0);
        assert_eq!(r.top5, None);
        // with k = 3 and the query (0.2, 1) cos sims: class1 (0,1): 0.981, class0 (0.9,0.1): 0.305,
        // class0 (1,0): 0.196. Weights exp(s/0.1): class 1 ≈ 18 089, class 0 ≈ 21.1 + 7.1 → class 1.
        // With T = 100 the weights are ≈ equal, so the two class-0 neighbours outvote it.
        let cfg3 = KnnConfig {
            k: 3,
            temperature: 0.1,
            chunk: 7,
        };
        let r = knn_classify(&train, &labels, &test[..2], &[1], 2, 2, &cfg3, &dev);
        assert_eq!(r.top1, 100.0);
        let cfg3_flat = KnnConfig {
            k: 3,
            temperature: 100.0,
            chunk: 7,
        };
        let r = knn_classify(&train, &labels, &test[..2], &[1], 2, 2, &cfg3_flat, &dev);
        assert_eq!(r.top1, 0.0);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let dev = Device::flex();
        let mut rng = crate::testutil::Rng(3);
        let (n, m, d, c) = (50, 23, 4, 5);
        let train: Vec<f32> = rng.vec(n * d).iter().map(|&x| x as f32).collect();
        let test: Vec<f32> = rng.vec(m * d).iter().map(|&x| x as f32).collect();
        let tl: Vec<u32> = (0..n as u32).map(|i| i % c).collect();
        let el: Vec<u32> = (0..m as u32).map(|i| (i * 7) % c).collect();
        let a = knn_classify(
            &train,
            &tl,
            &test,
            &el,
            d,
            c as usize,
            &KnnConfig {
                k: 10,
                temperature: 0.1,
                chunk: 4,
            },
            &dev,
        );
        let b = knn_classify(
            &train,
            &tl,
            &test,
            &el,
            d,
            c as usize,
            &KnnConfig {
                k: 10,
                temperature: 0.1,
                chunk: 1000,
            },
            &dev,
        );
        assert_eq!(a, b);
        assert!(a.top5.unwrap() >= a.top1);
    }
}
