//! The built-in digits data set: scikit-learn's copy of the UCI "optdigits" test set
//! (1,797 grey 8x8 images of handwritten digits, 10 classes; BSD-3-Clause, see
//! `data/digits.rst` and `data/sklearn-COPYING`), embedded in the binary.

use std::path::Path;

use crate::error::DataError;
use crate::image::Image;
use crate::source::csv;
use crate::source::dataset::Dataset;
use crate::source::gz::gunzip;

/// The gzipped CSV (64 values 0..16, then the label, per row).
pub static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Number of images in the digits data set.
pub const DIGITS_LEN: usize = 1797;

/// Loads all 1,797 digits as 1x8x8 images (values scaled to `round(v * 255 / 16)`), labels
/// 0..9, class names "0".."9", ids `digits:ROW` (0-based row in the file).
pub fn load_digits() -> Result<Dataset, DataError> {
    let path = Path::new("<built-in>/digits.csv.gz");
    let bytes = gunzip(DIGITS_CSV_GZ, path)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| DataError::format(path, "not valid UTF-8 text"))?;
    let p = csv::parse(text, path, 16, Some(((1, 8, 8), true)))?;
    let images = p
        .pixels
        .into_iter()
        .map(|px| {
            let px = px
                .into_iter()
                .map(|v| ((v as u32 * 255 + 8) / 16) as u8)
                .collect();
            Image::new(1, 8, 8, px)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids = (0..images.len()).map(|i| format!("digits:{i}")).collect();
    let names = (0..10).map(|d| d.to_string()).collect();
    Dataset::new("digits", images, Some(p.labels), ids, Some(names))
}
