//! Image–text pairs (CLIP-style data): a JSON-lines file, one pair per line,
//!
//! ```text
//! {"image": "img/1f600.png", "caption": "grinning face (face, grin)", "category": "Smileys & Emotion", ...}
//! ```
//!
//! `image` is a path relative to the file's folder (or absolute) and `caption` the text; every
//! other field whose value is a string on the first line is a label field (`category`,
//! `subcategory`, …), used by the evaluation (zero-shot classification) and required as a
//! string on every line. Images are decoded once, composited over white where they have an
//! alpha channel (emoji are drawn on a transparent background) and resized to `size × size`
//! RGB. Every error names the file and the line.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::Image;
use crate::labelled::Subset;

/// The pairs of a data set (or of one split of it).
#[derive(Clone, Debug, Default)]
pub struct PairsDataset {
    /// The file's name without `.jsonl`.
    pub name: String,
    /// RGB `size × size` images.
    pub images: Vec<Image>,
    /// The caption of each image.
    pub captions: Vec<String>,
    /// The image files, as the file names them.
    pub image_paths: Vec<String>,
    /// The names of the label fields, in the first line's order.
    pub label_fields: Vec<String>,
    /// `values[f][i]`: label field `f` of pair `i`.
    pub values: Vec<Vec<String>>,
}

/// How many pairs a file may hold (a guard against a runaway file).
const MAX_PAIRS: usize = 10_000_000;

struct Line {
    number: usize,
    image: PathBuf,
    image_text: String,
    caption: String,
    values: Vec<String>,
}

fn line_err(path: &Path, line: usize, msg: impl Into<String>) -> DataError {
    DataError::Line {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// Reads the pairs of `file` and decodes their images at `size × size` (in parallel).
pub fn load_pairs(file: &Path, size: usize) -> Result<PairsDataset, DataError> {
    if size == 0 || size > 4096 {
        return Err(DataError::Options(format!(
            "image size must be in 1..=4096, got {size}"
        )));
    }
    let text = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
    let text = String::from_utf8(text).map_err(|e| DataError::Format {
        path: file.to_path_buf(),
        msg: format!(
            "not UTF-8 text (byte {}): a pairs file is JSON lines",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let (fields, lines) = parse_lines(file, &text, base)?;
    let images: Vec<Image> = lines
        .par_iter()
        .map(|l| {
            decode_over_white(&l.image, size)
                .map_err(|e| line_err(file, l.number, format!("image '{}': {e}", l.image_text)))
        })
        .collect::<Result<_, _>>()?;
    let mut values = vec![Vec::with_capacity(lines.len()); fields.len()];
    for l in &lines {
        for (f, v) in l.values.iter().enumerate() {
            values[f].push(v.clone());
        }
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = name.strip_suffix(".jsonl").unwrap_or(&name).to_string();
    Ok(PairsDataset {
        name,
        images,
        captions: lines.iter().map(|l| l.caption.clone()).collect(),
        image_paths: lines.into_iter().map(|l| l.image_text).collect(),
        label_fields: fields,
        values,
    })
}

/// The lines of a pairs file (blank lines skipped), with the label fields the first line
/// names. No image is read.
fn parse_lines(
    file: &Path,
    text: &str,
    base: &Path,
) -> Result<(Vec<String>, Vec<Line>), DataError> {
    let mut fields: Option<Vec<String>> = None;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        if lines.len() >= MAX_PAIRS {
            return Err(line_err(
                file,
                number,
                format!("more than {MAX_PAIRS} pairs"),
            ));
        }
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| line_err(file, number, format!("not a JSON object: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| line_err(file, number, "not a JSON object"))?;
        let string = |key: &str| -> Result<String, DataError> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(line_err(file, number, format!("'{key}' is not a string"))),
                None => Err(line_err(file, number, format!("no '{key}' field"))),
            }
        };
        let image_text = string("image")?;
        let caption = string("caption")?;
        if image_text.is_empty() {
            return Err(line_err(file, number, "'image' is empty"));
        }
        if caption.trim().is_empty() {
            return Err(line_err(file, number, "'caption' is empty"));
        }
        let fields = fields.get_or_insert_with(|| {
            obj.iter()
                .filter(|(k, v)| v.is_string() && *k != "image" && *k != "caption")
                .map(|(k, _)| k.clone())
                .collect()
        });
        let values = fields
            .iter()
            .map(|f| string(f))
            .collect::<Result<Vec<_>, _>>()?;
        lines.push(Line {
            number,
            image: base.join(&image_text),
            image_text,
            caption,
            values,
        });
    }
    if lines.is_empty() {
        return Err(DataError::Format {
            path: file.to_path_buf(),
            msg: "no pairs (one JSON object per line with 'image' and 'caption')".into(),
        });
    }
    Ok((fields.unwrap_or_default(), lines))
}

/// Decodes an image file to RGB `size × size`: transparent pixels composited over white, then
/// resized (triangle filter; non-square images are centre-cropped to a square first).
pub fn decode_over_white(path: &Path, size: usize) -> Result<Image, DataError> {
    use ::image::imageops::FilterType;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let img = ::image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            msg: "image has no pixels".into(),
        });
    }
    let mut rgba = img.to_rgba8();
    drop(img);
    for p in rgba.pixels_mut() {
        let a = p[3] as u32;
        for c in 0..3 {
            p[c] = ((p[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
        p[3] = 255;
    }
    let side = w.min(h);
    let cropped =
        ::image::imageops::crop_imm(&rgba, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let s = size as u32;
    let resized = if side == s {
        cropped
    } else {
        ::image::imageops::resize(&cropped, s, s, FilterType::Triangle)
    };
    let n = size * size;
    let mut pixels = vec![0u8; 3 * n];
    for (i, px) in resized.pixels().enumerate() {
        pixels[i] = px[0];
        pixels[n + i] = px[1];
        pixels[2 * n + i] = px[2];
    }
    Image::new(3, size, size, pixels)
}

impl PairsDataset {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// The pairs `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> PairsDataset {
        PairsDataset {
            name: self.name.clone(),
            images: self.images.subset(idx),
            captions: self.captions.subset(idx),
            image_paths: self.image_paths.subset(idx),
            label_fields: self.label_fields.clone(),
            values: self.values.iter().map(|v| v.subset(idx)).collect(),
        }
    }

    /// The index of label field `name`.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.label_fields.iter().position(|f| f == name)
    }

    /// Seeded (train, validation, test) split: `test_fraction` and `val_fraction` of the pairs
    /// (rounded), stratified by the first label field when there is one; each part in file
    /// order.
    pub fn split(
        &self,
        val_fraction: f32,
        test_fraction: f32,
        seed: u64,
    ) -> (PairsDataset, PairsDataset, PairsDataset) {
        let labels = self.label_fields.first().map(|f| self.class_ids(f).0);
        let clamp = |f: f32| if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) };
        let (rest, mut test) = crate::source::split_indices(
            self.len(),
            labels.as_deref(),
            clamp(test_fraction),
            seed ^ 0x7E57,
        );
        // the validation share is of the whole set, taken from what is left
        let left = 1.0 - clamp(test_fraction);
        let vf = if left > 0.0 {
            (clamp(val_fraction) / left).min(1.0)
        } else {
            0.0
        };
        let rest_labels = labels
            .as_ref()
            .map(|l| rest.iter().map(|&i| l[i]).collect::<Vec<u32>>());
        let (tr, va) = crate::source::split_indices(rest.len(), rest_labels.as_deref(), vf, seed);
        let mut train: Vec<usize> = tr.iter().map(|&j| rest[j]).collect();
        let mut val: Vec<usize> = va.iter().map(|&j| rest[j]).collect();
        train.sort_unstable();
        val.sort_unstable();
        test.sort_unstable();
        (self.subset(&train), self.subset(&val), self.subset(&test))
    }

    /// Class ids of label field `name` (classes in sorted name order) and the class names.
    /// Panics when there is no such field.
    pub fn class_ids(&self, name: &str) -> (Vec<u32>, Vec<String>) {
        let f = self.field(name).expect("a label field of the data set");
        let mut names: Vec<String> = self.values[f].clone();
        names.sort();
        names.dedup();
        let ids = self.values[f]
            .iter()
            .map(|v| names.binary_search(v).expect("a known class") as u32)
            .collect();
        (ids, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(dir: &Path, name: &str, rgba: [u8; 4]) {
        let img = ::image::RgbaImage::from_pixel(4, 4, ::image::Rgba(rgba));
        img.save(dir.join(name)).unwrap();
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let f = dir.join("pairs.jsonl");
        std::fs::write(&f, text).unwrap();
        f
    }

    #[test]
    fn reads_pairs_labels_and_composites_alpha_over_white() {
        let d = tempfile::tempdir().unwrap();
        png(d.path(), "a.png", [255, 0, 0, 255]);
        png(d.path(), "b.png", [0, 0, 0, 0]);
        png(d.path(), "c.png", [0, 0, 255, 128]);
        let f = write(
            d.path(),
            concat!(
                r#"{"image": "a.png", "caption": "red square", "category": "shapes", "n": 1}"#,
                "\n\n",
                r#"{"image": "b.png", "caption": "nothing", "category": "empty", "n": 2}"#,
                "\n",
                r#"{"image": "c.png", "caption": "light blue", "category": "shapes", "n": 3}"#,
                "\n"
            ),
        );
        let p = load_pairs(&f, 2).unwrap();
        assert_eq!(p.name, "pairs");
        assert_eq!(p.len(), 3);
        assert_eq!(p.captions[2], "light blue");
        assert_eq!(p.label_fields, vec!["category".to_string()]);
        assert_eq!(p.images[0].shape(), (3, 2, 2));
        assert_eq!(
            (p.images[0].get(0, 0, 0), p.images[0].get(1, 0, 0)),
            (255, 0)
        );
        // fully transparent: white; half-transparent blue: a light blue
        assert_eq!(p.images[1].plane(0), &[255, 255, 255, 255]);
        let (r, b) = (p.images[2].get(0, 1, 1), p.images[2].get(2, 1, 1));
        assert_eq!(b, 255);
        assert!((126..=128).contains(&r), "{r}");
        let (ids, names) = p.class_ids("category");
        assert_eq!(ids, vec![1, 0, 1]);
        assert_eq!(names, vec!["empty".to_string(), "shapes".to_string()]);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        png(d.path(), "a.png", [255, 0, 0, 255]);
        let good = r#"{"image": "a.png", "caption": "x", "category": "c"}"#;
        for (second, want) in [
            ("{not json", "2: not a JSON object"),
            ("[1, 2]", "2: not a JSON object"),
            (
                r#"{"caption": "x", "category": "c"}"#,
                "2: no 'image' field",
            ),
            (
                r#"{"image": "a.png", "category": "c"}"#,
                "2: no 'caption' field",
            ),
            (
                r#"{"image": "a.png", "caption": 3, "category": "c"}"#,
                "2: 'caption' is not a string",
            ),
            (
                r#"{"image": "a.png", "caption": "x"}"#,
                "2: no 'category' field",
            ),
            (
                r#"{"image": "gone.png", "caption": "x", "category": "c"}"#,
                "2: image 'gone.png'",
            ),
        ] {
            let f = write(d.path(), &format!("{good}\n{second}\n"));
            let e = load_pairs(&f, 4).unwrap_err().to_string();
            assert!(e.contains("pairs.jsonl:") && e.contains(want), "{e}");
        }
        std::fs::write(d.path().join("bad.png"), b"not a png").unwrap();
        let f = write(
            d.path(),
            r#"{"image": "bad.png", "caption": "x", "category": "c"}"#,
        );
        let e = load_pairs(&f, 4).unwrap_err().to_string();
        assert!(e.contains("pairs.jsonl:1: image 'bad.png'"), "{e}");
        let f = write(d.path(), "\n\n");
        let e = load_pairs(&f, 4).unwrap_err().to_string();
        assert!(e.contains("no pairs"), "{e}");
        std::fs::write(d.path().join("bin.jsonl"), [0xff, 0xfe, 0]).unwrap();
        let e = load_pairs(&d.path().join("bin.jsonl"), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin.jsonl") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let d = tempfile::tempdir().unwrap();
        png(d.path(), "a.png", [255, 0, 0, 255]);
        let text: String = (0..40)
            .map(|i| {
                format!(
                    "{{\"image\": \"a.png\", \"caption\": \"pair {i}\", \"category\": \"c{}\"}}\n",
                    i % 4
                )
            })
            .collect();
        let p = load_pairs(&write(d.path(), &text), 2).unwrap();
        let (tr, va, te) = p.split(0.1, 0.2, 7);
        assert_eq!((tr.len(), va.len(), te.len()), (28, 4, 8));
        let mut all: Vec<String> = [&tr, &va, &te]
            .iter()
            .flat_map(|s| s.captions.clone())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40);
        let (tr2, _, te2) = p.split(0.1, 0.2, 7);
        assert_eq!(
            (tr.captions.clone(), te.captions.clone()),
            (tr2.captions, te2.captions)
        );
        // stratified by the first label field: two test pairs of each class
        let (ids, _) = te.class_ids("category");
        assert!((0..4).all(|c| ids.iter().filter(|&&i| i == c).count() == 2));
    }
}
