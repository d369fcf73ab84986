//! 2-D maps of embeddings, to look at: the first two principal components (PCA), and t-SNE
//! (Barnes–Hut, the `bhtsne` crate) started from the PCA map so that the same embeddings give
//! the same picture. Both work on a capped sample ([`sample`]): t-SNE costs O(n log n) per
//! iteration and a picture of a thousand points shows what a million would.

use selfsup_data::rng::SplitMix64;

/// A 2-D map: `xy` row-major (n × 2).
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub xy: Vec<f32>,
    /// PCA: the share of the total variance along each of the two axes (0..1); t-SNE: none.
    pub explained: Option<[f64; 2]>,
}

/// The indices of at most `cap` rows of `n`, drawn without replacement with `seed` and
/// returned in increasing order (all of them when `n <= cap`).
pub fn sample(n: usize, cap: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if n > cap {
        SplitMix64::from_parts(&[seed, 0x006d_6170]).shuffle(&mut idx);
        idx.truncate(cap);
        idx.sort_unstable();
    }
    idx
}

/// The rows of `x` (`n × d`, row-major) projected on their first two principal components
/// (mean removed), computed in float64 by subspace iteration on `XᵀX` without forming it.
/// Each axis's sign is fixed so that its largest-magnitude loading is positive: the same data
/// give the same map. `n >= 2` and `d >= 1`; a constant direction gives a zero axis.
pub fn pca_2d(x: &[f32], n: usize, d: usize) -> Map {
    assert_eq!(
        x.len(),
        n * d,
        "pca_2d: {} values are not {n} × {d}",
        x.len()
    );
    let mut mean = vec![0f64; d];
    for r in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let c: Vec<f64> = x
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m))
        .collect();
    let total: f64 = c.iter().map(|v| v * v).sum();
    // C v = Xᵀ (X v), for the k columns of v (d × k, column-major)
    let times_cov = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
        v.iter()
            .map(|col| {
                let mut out = vec![0f64; d];
                for r in c.chunks_exact(d) {
                    let s: f64 = r.iter().zip(col).map(|(a, b)| a * b).sum();
                    out.iter_mut().zip(r).for_each(|(o, a)| *o += s * a);
                }
                out
            })
            .collect()
    };
    let k = d.min(2);
    // a fixed start that is not orthogonal to any axis in general
    let mut v: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            (0..d)
                .map(|i| {
                    1.0 + ((i * (j + 2) + j) % 7) as f64 / 7.0 * if j == 1 { -1.0 } else { 1.0 }
                })
                .collect()
        })
        .collect();
    orthonormalise(&mut v);
    for _ in 0..1000 {
        let mut w = times_cov(&v);
        orthonormalise(&mut w);
        let change = v
            .iter()
            .zip(&w)
            .map(|(a, b)| 1.0 - a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>().abs())
            .fold(0f64, f64::max);
        v = w;
        if change < 1e-13 {
            break;
        }
    }
    // the two directions by variance (Rayleigh quotients), then the sign convention
    let cv = times_cov(&v);
    let mut axes: Vec<(f64, Vec<f64>)> = v
        .into_iter()
        .zip(&cv)
        .map(|(a, ca)| (a.iter().zip(ca).map(|(p, q)| p * q).sum::<f64>(), a))
        .collect();
    axes.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, a) in &mut axes {
        let big = a
            .iter()
            .copied()
            .fold(0f64, |m, v| if v.abs() > m.abs() { v } else { m });
        if big < 0.0 {
            a.iter_mut().for_each(|v| *v = -*v);
        }
    }
    let mut xy = vec![0f32; n * 2];
    for (i, r) in c.chunks_exact(d).enumerate() {
        for (j, (_, a)) in axes.iter().enumerate() {
            xy[i * 2 + j] = r.iter().zip(a).map(|(p, q)| p * q).sum::<f64>() as f32;
        }
    }
    let share = |j: usize| {
        axes.get(j)
            .map_or(0.0, |(var, _)| if total > 0.0 { var / total } else { 0.0 })
    };
    Map {
        xy,
        explained: Some([share(0), share(1)]),
    }
}

/// Gram–Schmidt on the columns, in order (a column that vanishes stays zero).
fn orthonormalise(v: &mut [Vec<f64>]) {
    for j in 0..v.len() {
        for i in 0..j {
            let (done, rest) = v.split_at_mut(j);
            let dot: f64 = done[i].iter().zip(&rest[0]).map(|(a, b)| a * b).sum();
            rest[0]
                .iter_mut()
                .zip(&done[i])
                .for_each(|(b, a)| *b -= dot * a);
        }
        let norm = v[j].iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 0.0 {
            v[j].iter_mut().for_each(|a| *a /= norm);
        }
    }
}

/// The `k` nearest rows of every row of `x` (`n × d`) by Euclidean distance, computed exactly
/// (float64), nearest first, ties by index: the same data give the same neighbours.
fn nearest(x: &[f32], n: usize, d: usize, k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    use rayon::prelude::*;
    let k = k.min(n - 1);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let a = &x[i * d..(i + 1) * d];
            let mut all: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let b = &x[j * d..(j + 1) * d];
                    let s: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                        .sum();
                    (s.sqrt(), j)
                })
                .collect();
            all.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            all.truncate(k);
            all.into_iter()
                .map(|(dist, index)| bhtsne::Neighbor {
                    index,
                    distance: dist as f32,
                })
                .collect()
        })
        .collect()
}

/// The perplexity t-SNE uses for `n` points: 30, or less where `n` is small (the crate needs
/// `3 × perplexity <= n - 1`); `None` below 10 points, too few for a map.
pub fn tsne_perplexity(n: usize) -> Option<f32> {
    (n >= 10).then(|| ((n - 1) / 3).min(30) as f32)
}

/// t-SNE of the rows of `x` (`n × d`) to 2-D: Barnes–Hut (θ = 0.5) on Euclidean distances,
/// perplexity [`tsne_perplexity`], `epochs` iterations, started from the PCA map scaled to a
/// standard deviation of 10⁻⁴ along its first axis (as scikit-learn's `init="pca"`), on exact
/// nearest neighbours ([`nearest`]) and one thread: no random draw and no varying order of
/// sums, so the same data give the same map. `None` for fewer than 10 points.
pub fn tsne_2d(x: &[f32], n: usize, d: usize, epochs: usize) -> Option<Map> {
    let perplexity = tsne_perplexity(n)?;
    let pca = pca_2d(x, n, d);
    let sd = (pca
        .xy
        .iter()
        .step_by(2)
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt()
        .max(1e-12);
    let init: Vec<f32> = pca
        .xy
        .iter()
        .map(|v| (*v as f64 / sd * 1e-4) as f32)
        .collect();
    let rows: Vec<&[f32]> = x.chunks_exact(d).collect();
    let neighbours = nearest(x, n, d, (3.0 * perplexity) as usize);
    // one thread: the crate's parallel sums would otherwise add in a varying order
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .ok()?;
    let xy = pool.install(|| {
        let mut t: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&rows);
        t.perplexity(perplexity)
            .epochs(epochs)
            .initial_embedding(init)
            .barnes_hut_with_neighbors(0.5, &neighbours);
        t.embedding()
    });
    Some(Map {
        xy,
        explained: None,
    })
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the float64 references index like the textbook
mod tests {
    use super::*;

    /// A standard normal draw (Box–Muller).
    fn normal(rng: &mut SplitMix64) -> f64 {
        let u = rng.next_f64().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()
    }

    /// Points with variances 9, 4 and 1 along three orthonormal directions of R⁵, shifted.
    fn three_directions(n: usize) -> (Vec<f32>, [[f64; 5]; 3]) {
        let s = 1.0 / 2f64.sqrt();
        let dirs = [
            [s, s, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.6, 0.8, 0.0],
            [s, -s, 0.0, 0.0, 0.0],
        ];
        let mut rng = SplitMix64::new(3);
        let mut x = Vec::new();
        for _ in 0..n {
            let coef = [
                3.0 * normal(&mut rng),
                2.0 * normal(&mut rng),
                normal(&mut rng),
            ];
            for j in 0..5 {
                let v: f64 = (0..3).map(|k| coef[k] * dirs[k][j]).sum();
                x.push((v + 5.0 + j as f64) as f32);
            }
        }
        (x, dirs)
    }

    /// The reference: the eigen-decomposition of the float64 covariance by Jacobi rotations.
    fn reference_axes(x: &[f32], n: usize, d: usize) -> Vec<(f64, Vec<f64>)> {
        let mut mean = vec![0f64; d];
        for r in x.chunks_exact(d) {
            for j in 0..d {
                mean[j] += r[j] as f64 / n as f64;
            }
        }
        let mut a = vec![vec![0f64; d]; d];
        for r in x.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    a[i][j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]);
                }
            }
        }
        let mut v: Vec<Vec<f64>> = (0..d)
            .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        for _ in 0..100 {
            for p in 0..d {
                for q in p + 1..d {
                    if a[p][q].abs() < 1e-300 {
                        continue;
                    }
                    let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                    for k in 0..d {
                        let (akp, akq) = (a[k][p], a[k][q]);
                        a[k][p] = c * akp - s * akq;
                        a[k][q] = s * akp + c * akq;
                    }
                    for k in 0..d {
                        let (apk, aqk) = (a[p][k], a[q][k]);
                        a[p][k] = c * apk - s * aqk;
                        a[q][k] = s * apk + c * aqk;
                    }
                    for row in v.iter_mut() {
                        let (vp, vq) = (row[p], row[q]);
                        row[p] = c * vp - s * vq;
                        row[q] = s * vp + c * vq;
                    }
                }
            }
        }
        let mut axes: Vec<(f64, Vec<f64>)> = (0..d)
            .map(|j| (a[j][j], (0..d).map(|i| v[i][j]).collect()))
            .collect();
        axes.sort_by(|p, q| q.0.total_cmp(&p.0));
        axes
    }

    #[test]
    fn pca_finds_the_directions_of_largest_variance() {
        let (n, d) = (400, 5);
        let (x, dirs) = three_directions(n);
        let map = pca_2d(&x, n, d);
        let reference = reference_axes(&x, n, d);
        let total: f64 = reference.iter().map(|a| a.0).sum();
        let [e0, e1] = map.explained.unwrap();
        assert!((e0 - reference[0].0 / total).abs() < 1e-9, "{e0}");
        assert!((e1 - reference[1].0 / total).abs() < 1e-9, "{e1}");
        // the true shares are 9/14 and 4/14, up to sampling
        assert!((e0 - 9.0 / 14.0).abs() < 0.06 && (e1 - 4.0 / 14.0).abs() < 0.06);
        // each map coordinate is the projection on the reference axis, up to its sign
        let mut mean = vec![0f64; d];
        for r in x.chunks_exact(d) {
            (0..d).for_each(|j| mean[j] += r[j] as f64 / n as f64);
        }
        for (axis, (_, a)) in reference.iter().take(2).enumerate() {
            let proj: Vec<f64> = x
                .chunks_exact(d)
                .map(|r| (0..d).map(|j| (r[j] as f64 - mean[j]) * a[j]).sum())
                .collect();
            let sign = (proj[0] * map.xy[axis] as f64).signum();
            let worst = proj
                .iter()
                .enumerate()
                .map(|(i, p)| (sign * p - map.xy[i * 2 + axis] as f64).abs())
                .fold(0f64, f64::max);
            assert!(worst < 1e-4, "axis {axis}: max |difference| {worst}");
            // and the reference axis is the generating direction
            let cos: f64 = a.iter().zip(&dirs[axis]).map(|(p, q)| p * q).sum();
            assert!(cos.abs() > 0.99, "axis {axis}: cos {cos}");
        }
        // the sign convention: the largest loading of each axis is positive; same data, same map
        assert_eq!(pca_2d(&x, n, d), map);
    }

    #[test]
    fn pca_of_one_feature_and_of_constant_data() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let m = pca_2d(&x, 10, 1);
        assert_eq!(m.explained, Some([1.0, 0.0]));
        assert!(
            (m.xy[0] + 4.5).abs() < 1e-6 && m.xy[1] == 0.0,
            "{:?}",
            &m.xy[..2]
        );
        let flat = pca_2d(&[2.0; 12], 4, 3);
        assert!(flat.xy.iter().all(|v| *v == 0.0));
        assert_eq!(flat.explained, Some([0.0, 0.0]));
    }

    #[test]
    fn tsne_keeps_separated_clusters_apart() {
        // three clusters of 40 points in R⁸, far apart relative to their spread
        let (n, d) = (120, 8);
        let mut rng = SplitMix64::new(1);
        let mut x = Vec::new();
        for i in 0..n {
            for j in 0..d {
                let centre = if j == i % 3 { 10.0 } else { 0.0 };
                x.push((centre + normal(&mut rng)) as f32);
            }
        }
        let map = tsne_2d(&x, n, d, 400).unwrap();
        assert_eq!(map.xy.len(), n * 2);
        assert!(map.xy.iter().all(|v| v.is_finite()));
        // every point's nearest neighbour in the map is of its own cluster
        let dist = |a: usize, b: usize| {
            (map.xy[a * 2] - map.xy[b * 2]).powi(2)
                + (map.xy[a * 2 + 1] - map.xy[b * 2 + 1]).powi(2)
        };
        for a in 0..n {
            let nearest = (0..n)
                .filter(|&b| b != a)
                .min_by(|&p, &q| dist(a, p).total_cmp(&dist(a, q)))
                .unwrap();
            assert_eq!(nearest % 3, a % 3, "point {a}");
        }
        // started from the PCA map, not a random draw: the same data give the same map
        assert_eq!(tsne_2d(&x, n, d, 400).unwrap(), map);
        assert!(tsne_2d(&x[..9 * d], 9, d, 10).is_none());
        assert_eq!(tsne_perplexity(10), Some(3.0));
        assert_eq!(tsne_perplexity(5000), Some(30.0));
    }

    #[test]
    fn a_sample_is_capped_sorted_and_seeded() {
        assert_eq!(sample(5, 10, 0), vec![0, 1, 2, 3, 4]);
        let s = sample(1000, 100, 7);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, sample(1000, 100, 7));
        assert_ne!(s, sample(1000, 100, 8));
    }
}
