//! Seeded stratified k-fold cross-validation, the usual protocol of graph classification
//! (10 folds on TU data sets).

use crate::error::DataError;
use crate::rng::SplitMix64;

/// The test indices of each of `k` folds: each class's indices are shuffled (seeded by
/// `seed` and the class) and dealt round-robin over the folds, the dealing continuing from one
/// class to the next so fold sizes differ by at most one; within a class, fold counts differ by
/// at most one. The folds partition `0..labels.len()`; each fold is sorted.
///
/// Errors if `k < 2` or `k` exceeds the number of samples.
pub fn stratified_k_fold(
    labels: &[u32],
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    let n = labels.len();
    if k < 2 || k > n {
        return Err(DataError::Options(format!(
            "stratified k-fold needs 2 <= k <= {n} (the number of samples), got k = {k}"
        )));
    }
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut folds: Vec<Vec<usize>> = vec![Vec::with_capacity(n / k + 1); k];
    let mut next = 0usize;
    for &c in &classes {
        let mut members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        SplitMix64::from_parts(&[seed, c as u64, 0xF01D5]).shuffle(&mut members);
        for i in members {
            folds[next].push(i);
            next = (next + 1) % k;
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    Ok(folds)
}

/// The (train, test) indices of fold `i`: the test indices are `folds[i]`, the train indices
/// all the others, sorted.
///
/// # Panics
/// If `i >= folds.len()`.
pub fn fold_split(folds: &[Vec<usize>], i: usize) -> (Vec<usize>, Vec<usize>) {
    let mut train: Vec<usize> = folds
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .flat_map(|(_, f)| f.iter().copied())
        .collect();
    train.sort_unstable();
    (train, folds[i].clone())
}
