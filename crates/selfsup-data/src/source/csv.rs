//! CSV images: one row per image.
//!
//! Format:
//! - each data row holds `C*H*W` pixel values (integers `0..=255`, CHW order), optionally
//!   followed by a label (a non-negative integer) as the last column; fields are separated by
//!   commas and may be padded with spaces;
//! - blank lines are ignored, as are lines starting with `#`, except `# shape=C,H,W` which fixes
//!   the image shape (e.g. `# shape=3,32,32`); then a row of `C*H*W` values is unlabeled and a
//!   row of `C*H*W + 1` values is labeled;
//! - without a shape line, images are square and single-channel: if the first row's value count
//!   minus one is a perfect square, the last column is the label (785 = 28x28 + label), else if
//!   the count is a perfect square there is no label (784 = 28x28), else it is an error;
//! - the first non-comment line is taken as a header and skipped when any of its fields is not
//!   a number;
//! - the file may be gzipped (detected by its magic bytes, whatever its name).
//!
//! Errors name the file and line, e.g. `data.csv:17: expected 785 values, found 784`.

use std::path::Path;

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::Image;
use crate::source::dataset::Dataset;
use crate::source::gz::read_maybe_gz;

/// The parsed rows of a CSV image file.
pub(crate) struct Parsed {
    pub shape: (usize, usize, usize),
    pub labeled: bool,
    /// Raw values (not scaled), `C*H*W` per row.
    pub pixels: Vec<Vec<u8>>,
    pub labels: Vec<u32>,
    /// 1-based line number of each row.
    pub lines: Vec<usize>,
}

fn isqrt_exact(n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let r = (n as f64).sqrt().round() as usize;
    (r.checked_mul(r) == Some(n)).then_some(r)
}

fn parse_shape(spec: &str) -> Option<(usize, usize, usize)> {
    let v: Vec<usize> = spec
        .split(',')
        .map(|t| t.trim().parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        // at most 2^30 values per image (a 32,768² RGB image has 3·2^30): a row of that many
        // values is already 2 GB of text, and `n + 1` (a labelled row) must not overflow
        [c, h, w] if c > 0 && h > 0 && w > 0 => {
            (c.checked_mul(h)?.checked_mul(w)? <= 1 << 30).then_some((c, h, w))
        }
        _ => None,
    }
}

/// Parses CSV text; pixel values must lie in `0..=max_value`. `forced` fixes shape and label
/// presence (used by the built-in digits).
pub(crate) fn parse(
    text: &str,
    path: &Path,
    max_value: u32,
    forced: Option<((usize, usize, usize), bool)>,
) -> Result<Parsed, DataError> {
    let mut shape_decl: Option<(usize, usize, usize)> = None;
    let mut rows: Vec<(usize, &str)> = Vec::new();
    let mut first_data = true;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let c = comment.trim();
            if let Some(s) = c.strip_prefix("shape") {
                let s = s.trim_start().strip_prefix('=').unwrap_or(s).trim();
                let shape = parse_shape(s).ok_or_else(|| {
                    DataError::line(
                        path,
                        lineno,
                        format!("bad shape line '{line}', expected '# shape=C,H,W'"),
                    )
                })?;
                if !rows.is_empty() {
                    return Err(DataError::line(
                        path,
                        lineno,
                        "the '# shape=' line must come before the data rows",
                    ));
                }
                shape_decl = Some(shape);
            }
            continue;
        }
        if first_data {
            first_data = false;
            if line.split(',').any(|t| t.trim().parse::<f64>().is_err()) {
                continue; // header
            }
        }
        rows.push((lineno, line));
    }
    let Some(&(first_line, first_row)) = rows.first() else {
        return Err(DataError::format(path, "no data rows"));
    };
    let count = first_row.split(',').count();
    let (shape, labeled) = match (forced, shape_decl) {
        (Some(f), _) => f,
        (None, Some((c, h, w))) => {
            let n = c * h * w;
            if count == n {
                ((c, h, w), false)
            } else if count == n + 1 {
                ((c, h, w), true)
            } else {
                return Err(DataError::line(
                    path,
                    first_line,
                    format!(
                        "expected {n} values (shape {c},{h},{w}) or {} with a label, found {count}",
                        n + 1
                    ),
                ));
            }
        }
        (None, None) => {
            if let Some(s) = count.checked_sub(1).and_then(isqrt_exact) {
                ((1, s, s), true)
            } else if let Some(s) = isqrt_exact(count) {
                ((1, s, s), false)
            } else {
                return Err(DataError::line(
                    path,
                    first_line,
                    format!(
                        "cannot infer the image shape from {count} values (neither {count} nor \
                         {count}-1 is a perfect square); add a line '# shape=C,H,W'"
                    ),
                ));
            }
        }
    };
    let npix = shape.0 * shape.1 * shape.2;
    let expected = npix + usize::from(labeled);
    let parsed: Vec<Result<(Vec<u8>, u32), DataError>> = rows
        .par_iter()
        .map(|&(lineno, line)| parse_row(line, lineno, path, npix, expected, labeled, max_value))
        .collect();
    let mut out = Parsed {
        shape,
        labeled,
        pixels: Vec::with_capacity(rows.len()),
        labels: Vec::with_capacity(if labeled { rows.len() } else { 0 }),
        lines: rows.iter().map(|r| r.0).collect(),
    };
    for r in parsed {
        let (px, label) = r?;
        out.pixels.push(px);
        if labeled {
            out.labels.push(label);
        }
    }
    Ok(out)
}

fn parse_row(
    line: &str,
    lineno: usize,
    path: &Path,
    npix: usize,
    expected: usize,
    labeled: bool,
    max_value: u32,
) -> Result<(Vec<u8>, u32), DataError> {
    let mut px = Vec::with_capacity(npix.min(line.len() / 2 + 1));
    let mut label = 0u32;
    let mut count = 0usize;
    for (col, field) in line.split(',').enumerate() {
        count += 1;
        if count > expected {
            continue; // counted for the error below
        }
        let t = field.trim();
        if labeled && col == npix {
            label = t.parse::<u32>().map_err(|_| {
                DataError::line(
                    path,
                    lineno,
                    format!(
                        "label '{t}' in column {} is not a non-negative integer",
                        col + 1
                    ),
                )
            })?;
        } else {
            let v = parse_value(t).ok_or_else(|| {
                DataError::line(
                    path,
                    lineno,
                    format!(
                        "value '{t}' in column {} is not a number 0..{max_value}",
                        col + 1
                    ),
                )
            })?;
            if v > max_value {
                return Err(DataError::line(
                    path,
                    lineno,
                    format!(
                        "value '{t}' in column {} is out of range 0..{max_value}",
                        col + 1
                    ),
                ));
            }
            px.push(v as u8);
        }
    }
    if count != expected {
        return Err(DataError::line(
            path,
            lineno,
            format!("expected {expected} values, found {count}"),
        ));
    }
    Ok((px, label))
}

/// An integer, also written as `12.0`; `None` for anything else (including negatives).
fn parse_value(t: &str) -> Option<u32> {
    if let Ok(v) = t.parse::<u32>() {
        return Some(v);
    }
    let f = t.parse::<f64>().ok()?;
    (f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f)).then_some(f as u32)
}

/// Loads a CSV image file (see the module documentation for the format) as one data set.
pub fn load_csv(path: &Path, name: &str) -> Result<Dataset, DataError> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        DataError::line(path, line, "not valid UTF-8 text")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // byte-order mark
    let p = parse(text, path, 255, None)?;
    let file = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let (c, h, w) = p.shape;
    let ids = p.lines.iter().map(|l| format!("{file}:{l}")).collect();
    let images = p
        .pixels
        .into_iter()
        .map(|px| Image::new(c, h, w, px))
        .collect::<Result<Vec<_>, _>>()?;
    Dataset::new(name, images, p.labeled.then_some(p.labels), ids, None)
}

#[cfg(test)]
mod tests {
    use super::parse_shape;

    #[test]
    fn shape_lines_beyond_2_pow_30_values_are_refused() {
        assert_eq!(parse_shape("3,32,32"), Some((3, 32, 32)));
        assert_eq!(parse_shape("1,32768,32768"), Some((1, 32768, 32768)));
        assert_eq!(parse_shape("2,32768,32768"), None);
        // c·h·w = usize::MAX: a labelled row (`n + 1` values) would overflow
        assert_eq!(parse_shape(&format!("1,1,{}", usize::MAX)), None);
        assert_eq!(parse_shape("0,2,2"), None);
    }
}
