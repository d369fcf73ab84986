//! Subsets of labelled collections: the items at some indices, in that order, with their labels
//! and ids, and whatever describes the whole collection (its name, class names, sample rate,
//! image shape) kept as it is.
//!
//! Every collection of the crate — images ([`crate::Dataset`]), images left on disk
//! ([`crate::StreamSource`]), documents ([`crate::text::TextCorpus`]), clips
//! ([`crate::audio::AudioDataset`]) and image–text pairs ([`crate::pairs::PairsDataset`]) — is
//! a few per-item columns of one length beside per-collection fields. Their `subset` methods
//! pick each column with [`Subset::subset`] and clone the rest, so the indexing itself (order
//! kept, an index may repeat, an index out of range panics) is written once, here. The
//! columns differ too much to share one struct: the images' are `images`, `labels`, `ids`;
//! the pairs' are `images`, `captions`, `image_paths` and one column per label field; a clip
//! carries its own labels.

/// A per-item column that can be cut down to the items at some indices.
pub trait Subset {
    /// The items at `idx`, in that order (an index may repeat).
    ///
    /// Panics when an index is out of range.
    fn subset(&self, idx: &[usize]) -> Self;
}

impl<T: Clone> Subset for Vec<T> {
    fn subset(&self, idx: &[usize]) -> Self {
        idx.iter().map(|&i| self[i].clone()).collect()
    }
}

/// An optional column, such as the labels of data that may be unlabelled: `None` stays `None`.
impl<S: Subset> Subset for Option<S> {
    fn subset(&self, idx: &[usize]) -> Self {
        self.as_ref().map(|s| s.subset(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_in_the_order_given_and_keeps_none() {
        let v = vec!["a", "b", "c", "d"];
        assert_eq!(v.subset(&[2, 0, 2]), vec!["c", "a", "c"]);
        assert!(v.subset(&[]).is_empty());
        assert_eq!(Some(vec![10u32, 11, 12]).subset(&[1]), Some(vec![11]));
        assert_eq!(None::<Vec<u32>>.subset(&[0, 5]), None);
    }

    #[test]
    #[should_panic]
    fn an_index_out_of_range_panics() {
        vec![1, 2].subset(&[2]);
    }
}
