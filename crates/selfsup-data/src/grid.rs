//! Contact sheets of augmented views, for looking at what the augmentations do.

use std::path::Path;

use crate::error::DataError;
use crate::image::Image;

/// Also at this path for the crates that write through it (it lives in [`crate::fsutil`]).
pub use crate::fsutil::write_atomic;

/// Separator width in pixels between cells.
const SEP: usize = 2;
/// Separator and background colour.
const BACKGROUND: [u8; 3] = [128, 128, 128];

/// Writes a PNG where row `r` shows `originals[r]` followed by `views[r]`, each upscaled by
/// `scale` (nearest neighbour), separated by 2-pixel grey lines. Grey images are shown as grey;
/// cells are as large as the largest image. The file is written atomically (a temporary file in
/// the same folder, then renamed).
pub fn save_views_grid(
    path: &Path,
    originals: &[Image],
    views: &[Vec<Image>],
    scale: usize,
) -> Result<(), DataError> {
    let bad = |msg: String| DataError::Encode {
        path: path.to_path_buf(),
        msg,
    };
    if originals.is_empty() {
        return Err(bad("no images to show".to_string()));
    }
    if views.len() != originals.len() {
        return Err(bad(format!(
            "{} rows of views for {} originals",
            views.len(),
            originals.len()
        )));
    }
    if scale == 0 || scale > 64 {
        return Err(bad(format!("scale {scale} must be in 1..=64")));
    }
    let all = originals.iter().chain(views.iter().flatten());
    let cell_h = all.clone().map(|i| i.height).max().unwrap_or(1) * scale;
    let cell_w = all.map(|i| i.width).max().unwrap_or(1) * scale;
    let cols = 1 + views.iter().map(Vec::len).max().unwrap_or(0);
    let rows = originals.len();
    let width = cols * cell_w + (cols + 1) * SEP;
    let height = rows * cell_h + (rows + 1) * SEP;
    if width > 1 << 15 || height > 1 << 15 {
        return Err(bad(format!(
            "grid of {width}x{height} pixels is too large; use fewer images or a smaller scale"
        )));
    }
    let mut canvas = vec![0u8; width * height * 3];
    for px in canvas.chunks_exact_mut(3) {
        px.copy_from_slice(&BACKGROUND);
    }
    for (r, (orig, row_views)) in originals.iter().zip(views).enumerate() {
        for (col, img) in std::iter::once(orig).chain(row_views).enumerate() {
            let rgb = img.to_rgb_interleaved();
            let top = SEP + r * (cell_h + SEP);
            let left = SEP + col * (cell_w + SEP);
            for y in 0..img.height * scale {
                let sy = y / scale;
                let dst_row = (top + y) * width;
                for x in 0..img.width * scale {
                    let s = (sy * img.width + x / scale) * 3;
                    let d = (dst_row + left + x) * 3;
                    canvas[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
                }
            }
        }
    }
    let mut png = Vec::new();
    ::image::ImageEncoder::write_image(
        ::image::codecs::png::PngEncoder::new(&mut png),
        &canvas,
        width as u32,
        height as u32,
        ::image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| bad(e.to_string()))?;
    write_atomic(path, &png)
}
