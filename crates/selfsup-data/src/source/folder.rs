//! Image folders: PNG/JPEG files (extensions `png`, `jpg`, `jpeg`, any case).
//!
//! Two layouts:
//! - labeled: `DIR/CLASS/…/*.png` — every sub-folder of `DIR` that contains images (at any
//!   depth below it) is a class; classes are sorted by name and numbered from 0; images lying
//!   directly in `DIR` are then ignored (with a warning);
//! - flat: `DIR/*.png` with no class sub-folders — unlabeled.
//!
//! Hidden files and folders (names starting with `.`) are ignored. Files are taken in sorted
//! path order; ids are paths relative to `DIR` with `/` separators.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::{Image, LUMA, quantize};
use crate::source::dataset::{Dataset, LoadOptions, train_test_indices};

/// Default size `(height, width)` of folder images.
pub const DEFAULT_SIZE: (usize, usize) = (32, 32);
/// Channel count of a folder with colour images (a folder of grey images is read as 1).
pub const DEFAULT_CHANNELS: usize = 3;
/// Deepest folder nesting searched below a class folder.
const MAX_DEPTH: usize = 32;

/// The image files of a folder, in sorted order.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Full paths.
    pub files: Vec<PathBuf>,
    /// Paths relative to the folder, `/`-separated (the ids).
    pub rel: Vec<String>,
    /// Class index per file (labeled layout).
    pub labels: Option<Vec<u32>>,
    /// Sorted class names (labeled layout).
    pub class_names: Option<Vec<String>>,
}

/// True for a file name with a png/jpg/jpeg extension (any case).
pub fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        e == "png" || e == "jpg" || e == "jpeg"
    })
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Sorted (name, path, is_dir) entries of a folder, hidden ones left out.
/// The visible entries of `dir` (name, path, is a folder), by name; links are followed and
/// entries that cannot be read are skipped with a warning.
pub(crate) fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        // Follow symbolic links; entries that cannot be stat'ed (dangling links) are skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            tracing::warn!("{}: cannot read, ignored", path.display());
            continue;
        };
        out.push((name.to_string_lossy().into_owned(), path, meta.is_dir()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The files under `dir` (at most `MAX_DEPTH` folders deep) whose path `keep` accepts, as
/// `(path, rel/…/name)`, in name order.
pub(crate) fn collect_files(
    dir: &Path,
    rel: &str,
    depth: usize,
    keep: fn(&Path) -> bool,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    for (name, path, is_dir) in entries(dir)? {
        let r = format!("{rel}/{name}");
        if is_dir {
            if depth < MAX_DEPTH {
                collect_files(&path, &r, depth + 1, keep, out)?;
            }
        } else if keep(&path) {
            out.push((path, r));
        }
    }
    Ok(())
}

/// Lists the images of a folder (see the module documentation for the layouts).
pub fn list_folder(dir: &Path) -> Result<Listing, DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::format(
            dir,
            "not a folder (expected a folder of images)",
        ));
    }
    let top = entries(dir)?;
    let mut files = Vec::new();
    let mut rel = Vec::new();
    let mut labels = Vec::new();
    let mut classes = Vec::new();
    for (name, path, is_dir) in top.iter().filter(|e| e.2) {
        debug_assert!(*is_dir);
        let mut found = Vec::new();
        collect_files(path, name, 1, is_image_name, &mut found)?;
        if found.is_empty() {
            continue;
        }
        let label = classes.len() as u32;
        classes.push(name.clone());
        for (p, r) in found {
            files.push(p);
            rel.push(r);
            labels.push(label);
        }
    }
    let flat: Vec<&(String, PathBuf, bool)> =
        top.iter().filter(|e| !e.2 && is_image_name(&e.1)).collect();
    if !classes.is_empty() {
        if !flat.is_empty() {
            tracing::warn!(
                "{}: {} image(s) directly in the folder ignored (the images are in class sub-folders)",
                dir.display(),
                flat.len()
            );
        }
        return Ok(Listing {
            files,
            rel,
            labels: Some(labels),
            class_names: Some(classes),
        });
    }
    if flat.is_empty() {
        return Err(DataError::NoImages {
            path: dir.to_path_buf(),
            skipped: 0,
        });
    }
    Ok(Listing {
        files: flat.iter().map(|e| e.1.clone()).collect(),
        rel: flat.iter().map(|e| e.0.clone()).collect(),
        labels: None,
        class_names: None,
    })
}

/// Decodes an image file, converts it to `channels` (1 = luma, 3 = RGB), centre-crops it to
/// the aspect ratio of `size` and resizes it (triangle filter) to `size = (height, width)`.
pub fn decode_image(
    path: &Path,
    channels: usize,
    size: (usize, usize),
) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(path, &bytes, channels, size)
}

/// [`decode_image`] of a file's bytes already read (`path` names it in errors: a file, or a
/// tar member as `SHARD.tar/NAME`).
pub fn decode_bytes(
    path: &Path,
    bytes: &[u8],
    channels: usize,
    size: (usize, usize),
) -> Result<Image, DataError> {
    use ::image::DynamicImage;
    use ::image::imageops::FilterType;
    let img = ::image::load_from_memory(bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    drop(img);
    let img = match channels {
        // Same luma weights as `Image::to_channels` (ITU-R 601), not the image crate's.
        1 => {
            let (w, h) = rgb.dimensions();
            DynamicImage::ImageLuma8(::image::GrayImage::from_fn(w, h, |x, y| {
                let p = rgb.get_pixel(x, y);
                ::image::Luma([quantize(
                    LUMA[0] * p[0] as f32 + LUMA[1] * p[1] as f32 + LUMA[2] * p[2] as f32,
                )])
            }))
        }
        _ => DynamicImage::ImageRgb8(rgb),
    };
    let (th, tw) = (size.0.max(1) as u64, size.1.max(1) as u64);
    let (w, h) = (img.width() as u64, img.height() as u64);
    if w == 0 || h == 0 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            msg: "image has no pixels".to_string(),
        });
    }
    let img = if (w, h) == (tw, th) {
        img
    } else {
        // Largest centred window with the target aspect ratio.
        let (cw, ch) = if w * th > h * tw {
            (((h * tw + th / 2) / th).clamp(1, w), h)
        } else {
            (w, ((w * th + tw / 2) / tw).clamp(1, h))
        };
        let (x, y) = ((w - cw) / 2, (h - ch) / 2);
        img.crop_imm(x as u32, y as u32, cw as u32, ch as u32)
            .resize_exact(tw as u32, th as u32, FilterType::Triangle)
    };
    Image::from_dynamic(&img, channels)
}

/// Decodes the listed files at `idx` in parallel. Returns the kept positions (into `idx`) and
/// images, and the number skipped.
fn decode_many(
    listing: &Listing,
    idx: &[usize],
    channels: usize,
    size: (usize, usize),
    skip_bad: bool,
) -> Result<(Vec<usize>, Vec<Image>, usize), DataError> {
    let results: Vec<Result<Image, DataError>> = idx
        .par_iter()
        .map(|&i| decode_image(&listing.files[i], channels, size))
        .collect();
    let (kept, images, skipped) = keep_decoded(results, skip_bad)?;
    Ok((kept.into_iter().map(|k| idx[k]).collect(), images, skipped))
}

/// The images decoded, with their positions in `results`: an undecodable or unreadable file is
/// skipped with a warning (and counted) when `skip_bad`, else it is the error.
pub(crate) fn keep_decoded(
    results: Vec<Result<Image, DataError>>,
    skip_bad: bool,
) -> Result<(Vec<usize>, Vec<Image>, usize), DataError> {
    let mut kept = Vec::with_capacity(results.len());
    let mut images = Vec::with_capacity(results.len());
    let mut skipped = 0;
    for (k, r) in results.into_iter().enumerate() {
        match r {
            Ok(img) => {
                kept.push(k);
                images.push(img);
            }
            Err(e @ (DataError::Decode { .. } | DataError::Io { .. })) if skip_bad => {
                tracing::warn!("skipped: {e}");
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((kept, images, skipped))
}

fn build(
    listing: &Listing,
    name: &str,
    kept: &[usize],
    images: Vec<Image>,
) -> Result<Dataset, DataError> {
    Dataset::new(
        name,
        images,
        listing
            .labels
            .as_ref()
            .map(|l| kept.iter().map(|&i| l[i]).collect()),
        kept.iter().map(|&i| listing.rel[i].clone()).collect(),
        listing.class_names.clone(),
    )
}

/// Whether every file is a grey image by its header (luma, with or without alpha, 8 or 16
/// bits): only the headers are read. A file whose header cannot be read counts as colour (its
/// decoding reports it later).
pub fn all_grey(files: &[PathBuf]) -> bool {
    use ::image::ColorType;
    !files.is_empty()
        && files.par_iter().all(|f| {
            let color = ::image::ImageReader::open(f)
                .ok()
                .and_then(|r| r.with_guessed_format().ok())
                .and_then(|r| r.into_decoder().ok())
                .map(|d| ::image::ImageDecoder::color_type(&d));
            matches!(
                color,
                Some(ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16)
            )
        })
}

/// Loads an image folder and splits it at random (seeded; stratified by class when labeled):
/// the training images, the test images and the number of files skipped as undecodable.
pub fn load_folder(
    dir: &Path,
    name: &str,
    opts: &LoadOptions,
) -> Result<(Dataset, Dataset, usize), DataError> {
    let listing = list_folder(dir)?;
    let size = opts.image_size.unwrap_or(DEFAULT_SIZE);
    let channels = match opts.channels {
        Some(c) => c,
        None if all_grey(&listing.files) => 1,
        None => DEFAULT_CHANNELS,
    };
    let (tr, te) = train_test_indices(listing.files.len(), listing.labels.as_deref(), opts);
    let (trk, tri, s1) = decode_many(&listing, &tr, channels, size, opts.skip_bad_images)?;
    let (tek, tei, s2) = decode_many(&listing, &te, channels, size, opts.skip_bad_images)?;
    let skipped = s1 + s2;
    if tri.is_empty() && tei.is_empty() {
        return Err(DataError::NoImages {
            path: dir.to_path_buf(),
            skipped,
        });
    }
    if skipped > 0 {
        tracing::warn!(
            "{}: skipped {skipped} undecodable image file(s)",
            dir.display()
        );
    }
    let train = build(&listing, name, &trk, tri)?;
    let test = build(&listing, name, &tek, tei)?;
    Ok((train, test, skipped))
}
