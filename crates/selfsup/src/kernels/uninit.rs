//! Output buffers that a kernel writes completely, allocated without zeroing them first.
//!
//! `vec![0.0; n]` on memory the allocator reuses is a `memset` pass over the whole output,
//! and every output of a convolution, batch norm or pool is then overwritten: those passes
//! were 7 % of the step-c profile (`__memset_avx512_unaligned_erms`, called from the conv
//! forward, batch norm forward and backward, and the pool backward).

use std::mem::MaybeUninit;

/// A vector of `n` floats, every one written by `fill` through the slice it is given.
///
/// # Safety
/// `fill` must write every element of the slice (with [`MaybeUninit::write`], or through a
/// pointer) before it returns; the vector is then taken as initialised.
pub(crate) unsafe fn written(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the capacity is at least `n`, and the caller guarantees that `fill` wrote all
    // `n` elements.
    unsafe { v.set_len(n) };
    v
}

/// Writes `src` into `dst` (equal lengths).
#[inline]
pub(crate) fn copy(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
}
