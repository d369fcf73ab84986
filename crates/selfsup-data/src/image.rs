//! A minimal planar (CHW) 8-bit image type and bilinear resampling.

use crate::error::DataError;

/// An 8-bit image stored channel-major (CHW): `pixels[(c * height + y) * width + x]`.
///
/// One channel is grey, three are RGB.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Number of channels (1 = grey, 3 = RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `channels * height * width` values in CHW order.
    pub pixels: Vec<u8>,
}

/// ITU-R 601 luma weights (as torchvision's `rgb_to_grayscale`).
pub(crate) const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

impl Image {
    /// An image from its CHW pixels; fails when a dimension is 0 or the buffer has the wrong length.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
    ) -> Result<Image, DataError> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(DataError::InvalidImage(format!(
                "dimensions {channels}x{height}x{width} (CxHxW) must all be positive"
            )));
        }
        let expected = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| {
                DataError::InvalidImage(format!(
                    "dimensions {channels}x{height}x{width} (CxHxW) are too large"
                ))
            })?;
        if pixels.len() != expected {
            return Err(DataError::InvalidImage(format!(
                "{channels}x{height}x{width} (CxHxW) needs {expected} pixel values, got {}",
                pixels.len()
            )));
        }
        Ok(Image {
            channels,
            height,
            width,
            pixels,
        })
    }

    /// An all-zero (black) image; dimensions of 0 are raised to 1.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Image {
        let (c, h, w) = (channels.max(1), height.max(1), width.max(1));
        Image {
            channels: c,
            height: h,
            width: w,
            pixels: vec![0; c * h * w],
        }
    }

    /// `(channels, height, width)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// The pixel value at channel `c`, row `y`, column `x` (panics when out of range).
    #[inline]
    pub fn get(&self, c: usize, y: usize, x: usize) -> u8 {
        self.pixels[(c * self.height + y) * self.width + x]
    }

    /// One channel plane (`height * width` values).
    pub fn plane(&self, c: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.pixels[c * n..(c + 1) * n]
    }

    /// Bilinear resize (half-pixel centres, like `align_corners=False`; no antialiasing).
    /// Sizes of 0 are raised to 1. Returns a clone when the size is unchanged.
    pub fn resize(&self, height: usize, width: usize) -> Image {
        let (oh, ow) = (height.max(1), width.max(1));
        if oh == self.height && ow == self.width {
            return self.clone();
        }
        let mut out = vec![0f32; self.channels * oh * ow];
        let (ys, xs) = (axis_taps(0, self.height, oh), axis_taps(0, self.width, ow));
        resample_bilinear(
            &self.pixels,
            self.channels,
            self.height,
            self.width,
            &ys,
            &xs,
            &mut out,
        );
        Image {
            channels: self.channels,
            height: oh,
            width: ow,
            pixels: out.iter().map(|&v| quantize(v)).collect(),
        }
    }

    /// The same image with `channels` channels: 1 → 3 replicates grey, 3 → 1 takes luma,
    /// 4 → 3 drops alpha, 4 → 1 takes luma, 2 → 1 drops alpha. Other conversions are errors.
    pub fn to_channels(&self, channels: usize) -> Result<Image, DataError> {
        if channels == self.channels {
            return Ok(self.clone());
        }
        let n = self.height * self.width;
        let pixels = match (self.channels, channels) {
            (1, 3) => self.pixels.repeat(3),
            (3, 1) | (4, 1) => luma_plane(&self.pixels, n),
            (4, 3) | (2, 1) => self.pixels[..channels * n].to_vec(),
            (from, to) => {
                return Err(DataError::InvalidImage(format!(
                    "cannot convert a {from}-channel image to {to} channels (supported: 1, 3)"
                )));
            }
        };
        Image::new(channels, self.height, self.width, pixels)
    }

    /// Converts a decoded image to CHW with 1 (luma) or 3 (RGB) channels, without resizing.
    pub fn from_dynamic(img: &::image::DynamicImage, channels: usize) -> Result<Image, DataError> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match channels {
            1 => Image::new(1, h, w, img.to_luma8().into_raw()),
            3 => {
                let rgb = img.to_rgb8();
                let raw = rgb.as_raw();
                let n = w * h;
                let mut pixels = vec![0u8; 3 * n];
                for (i, px) in raw.chunks_exact(3).enumerate() {
                    pixels[i] = px[0];
                    pixels[n + i] = px[1];
                    pixels[2 * n + i] = px[2];
                }
                Image::new(3, h, w, pixels)
            }
            c => Err(DataError::InvalidImage(format!(
                "unsupported channel count {c} (supported: 1, 3)"
            ))),
        }
    }

    /// Writes the image as a PNG, or a JPEG (quality 90) when the name ends in `.jpg` or
    /// `.jpeg`: grey for one channel, RGB otherwise.
    pub fn save(&self, path: &std::path::Path) -> Result<(), DataError> {
        use ::image::{DynamicImage, GrayImage, RgbImage};
        let (w, h) = (self.width as u32, self.height as u32);
        let bad = || DataError::InvalidImage(format!("{}: pixel buffer size", path.display()));
        let img = if self.channels == 1 {
            DynamicImage::ImageLuma8(
                GrayImage::from_raw(w, h, self.pixels.clone()).ok_or_else(bad)?,
            )
        } else {
            DynamicImage::ImageRgb8(
                RgbImage::from_raw(w, h, self.to_rgb_interleaved()).ok_or_else(bad)?,
            )
        };
        let encode = |e: ::image::ImageError| DataError::Encode {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if matches!(ext.as_deref(), Some("jpg" | "jpeg")) {
            let f = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
            let mut f = std::io::BufWriter::new(f);
            ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
                .encode_image(&img)
                .map_err(encode)
        } else {
            img.save_with_format(path, ::image::ImageFormat::Png)
                .map_err(encode)
        }
    }

    /// Interleaved RGB bytes (grey is replicated; only the first three channels are used).
    pub fn to_rgb_interleaved(&self) -> Vec<u8> {
        let n = self.height * self.width;
        let mut out = vec![0u8; 3 * n];
        for i in 0..n {
            for c in 0..3 {
                let src = if self.channels >= 3 { c } else { 0 };
                out[3 * i + c] = self.pixels[src * n + i];
            }
        }
        out
    }
}

/// Luma plane from the first three channels of a CHW buffer.
fn luma_plane(pixels: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            quantize(
                LUMA[0] * pixels[i] as f32
                    + LUMA[1] * pixels[n + i] as f32
                    + LUMA[2] * pixels[2 * n + i] as f32,
            )
        })
        .collect()
}

/// Rounds and clamps to `0..=255`.
#[inline]
pub(crate) fn quantize(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0.
    (v + 0.5) as u8
}

/// One output coordinate's two source taps and the weight of the second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tap {
    pub lo: usize,
    pub hi: usize,
    pub frac: f32,
}

/// Bilinear taps for resampling the source interval `[start, start + len)` onto `out` samples
/// (half-pixel centres, clamped to the interval, as torchvision crops then resizes).
pub(crate) fn axis_taps(start: usize, len: usize, out: usize) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(out);
    fill_axis_taps(start, len, out, &mut taps);
    taps
}

/// As [`axis_taps`], reusing `taps`.
pub(crate) fn fill_axis_taps(start: usize, len: usize, out: usize, taps: &mut Vec<Tap>) {
    taps.clear();
    let len = len.max(1);
    let scale = len as f32 / out.max(1) as f32;
    let max = (len - 1) as f32;
    for d in 0..out {
        let s = ((d as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
        let lo = s.floor();
        let frac = s - lo;
        let lo = lo as usize;
        let hi = (lo + 1).min(len - 1);
        taps.push(Tap {
            lo: start + lo,
            hi: start + hi,
            frac,
        });
    }
}

/// Bilinear resampling of a CHW buffer (`channels x h x w`) with precomputed row and column
/// taps into `out` (`channels x ys.len() x xs.len()`).
pub(crate) fn resample_bilinear<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    h: usize,
    w: usize,
    ys: &[Tap],
    xs: &[Tap],
    out: &mut [f32],
) {
    let (oh, ow) = (ys.len(), xs.len());
    debug_assert_eq!(out.len(), channels * oh * ow);
    for c in 0..channels {
        let plane = &src[c * h * w..(c + 1) * h * w];
        let dst = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for (oy, ty) in ys.iter().enumerate() {
            let r0 = &plane[ty.lo * w..ty.lo * w + w];
            let r1 = &plane[ty.hi * w..ty.hi * w + w];
            let fy = ty.frac;
            let drow = &mut dst[oy * ow..(oy + 1) * ow];
            for (d, tx) in drow.iter_mut().zip(xs) {
                let a = r0[tx.lo].into() + (r0[tx.hi].into() - r0[tx.lo].into()) * tx.frac;
                let b = r1[tx.lo].into() + (r1[tx.hi].into() - r1[tx.lo].into()) * tx.frac;
                *d = a + (b - a) * fy;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates() {
        assert!(Image::new(1, 2, 2, vec![0; 4]).is_ok());
        let e = Image::new(1, 2, 2, vec![0; 5]).unwrap_err().to_string();
        assert!(e.contains("needs 4"), "{e}");
        assert!(Image::new(0, 2, 2, vec![]).is_err());
        assert!(Image::new(usize::MAX, 2, 2, vec![]).is_err());
    }

    #[test]
    fn resize_identity_and_constant() {
        let img = Image::new(1, 3, 4, (0..12).collect()).unwrap();
        assert_eq!(img.resize(3, 4), img);
        let c = Image::new(3, 5, 5, vec![77; 75]).unwrap();
        let r = c.resize(9, 2);
        assert_eq!(r.shape(), (3, 9, 2));
        assert!(r.pixels.iter().all(|&v| v == 77));
    }

    #[test]
    fn resize_upscale_interpolates() {
        let img = Image::new(1, 1, 2, vec![0, 100]).unwrap();
        let r = img.resize(1, 4);
        // Half-pixel centres: taps at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        assert_eq!(r.pixels, vec![0, 25, 75, 100]);
    }

    #[test]
    fn channel_conversion() {
        let g = Image::new(1, 1, 2, vec![10, 200]).unwrap();
        let rgb = g.to_channels(3).unwrap();
        assert_eq!(rgb.pixels, vec![10, 200, 10, 200, 10, 200]);
        assert_eq!(rgb.to_channels(1).unwrap(), g);
        assert!(g.to_channels(5).is_err());
    }
}
