//! Folders of WAV clips with labels from sub-folder names or from file-name patterns (such as
//! the Free Spoken Digit Dataset's `{digit}_{speaker}_{index}.wav`), and their splits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::mel::{LogMel, MelSpectrogram};
use super::wav::{read_wav, resample};
use crate::error::DataError;
use crate::labelled::Subset;
use crate::source::folder::{collect_files, entries};

/// The pattern field holding the numeric recording index (not a label).
pub const INDEX_FIELD: &str = "index";

/// One clip.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioClip {
    /// Mono samples at the data set's sample rate, nominally in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// The file's path relative to the data set's folder, `/`-separated.
    pub id: String,
    /// One class index per label field of the data set.
    pub labels: Vec<u32>,
    /// The recording index from the `{index}` pattern field, if the pattern has one.
    pub index: Option<u32>,
}

/// A set of clips at one sample rate, with any number of label fields.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioDataset {
    /// A short name (the folder's name).
    pub name: String,
    /// The clips, sorted by id.
    pub clips: Vec<AudioClip>,
    /// Sample rate of every clip, in Hz.
    pub sample_rate: u32,
    /// Names of the label fields (e.g. `["digit", "speaker"]`, or `["class"]` for sub-folders).
    pub label_fields: Vec<String>,
    /// Class names per label field, indexed by class (label) number.
    pub class_names: Vec<Vec<String>>,
}

/// Where the labels of a folder of WAV files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioLabels {
    /// `DIR/CLASS/…/*.wav`: each sub-folder holding WAV files (at any depth) is a class of the
    /// single label field `class`; files directly in `DIR` are ignored (with a warning).
    SubFolders,
    /// `DIR/*.wav` (not recursive), labels from the file name through a [`FilePattern`] such
    /// as `{digit}_{speaker}_{index}.wav`.
    Pattern(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Field(String),
}

/// A file-name pattern: literal text and `{name}` fields (names of letters, digits and `_`,
/// each field at most once, consecutive fields separated by literal text; no escaping of
/// braces). A file name matches when the whole name does, each field taking at least one
/// character; where several splits are possible, earlier fields take the shortest value.
/// Matching is case-sensitive. The field `index` is the numeric recording index; the others
/// are label fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePattern {
    text: String,
    parts: Vec<Part>,
}

impl FilePattern {
    /// Parses a pattern; errors ([`DataError::Options`]) quote it and say what is wrong.
    pub fn parse(pattern: &str) -> Result<FilePattern, DataError> {
        let bad = |msg: &str| DataError::Options(format!("file-name pattern '{pattern}': {msg}"));
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') => return Err(bad("'{' inside a field")),
                            Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                            Some(ch) => {
                                return Err(bad(&format!(
                                    "field names may hold letters, digits and '_', not '{ch}'"
                                )));
                            }
                            None => return Err(bad("unclosed '{'")),
                        }
                    }
                    if name.is_empty() {
                        return Err(bad("empty field name '{}'"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    } else if matches!(parts.last(), Some(Part::Field(_))) {
                        return Err(bad(
                            "two fields in a row: separate fields with literal text",
                        ));
                    }
                    if parts.iter().any(|p| p == &Part::Field(name.clone())) {
                        return Err(bad(&format!("field '{{{name}}}' appears twice")));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err(bad("'}' without '{'")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(bad("no {field} in it"));
        }
        Ok(FilePattern {
            text: pattern.to_string(),
            parts,
        })
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The field names, in the order they appear (including `index`, if present).
    pub fn fields(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(f) => Some(f.as_str()),
                Part::Lit(_) => None,
            })
            .collect()
    }

    /// The value of each field (in [`FilePattern::fields`] order) when `name` matches.
    pub fn match_name<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        let mut out = Vec::new();
        match_parts(&self.parts, name, &mut out).then_some(out)
    }
}

fn match_parts<'a>(parts: &[Part], s: &'a str, out: &mut Vec<&'a str>) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some((Part::Lit(l), rest)) => {
            s.starts_with(l.as_str()) && match_parts(rest, &s[l.len()..], out)
        }
        Some((Part::Field(_), rest)) => {
            let Some(Part::Lit(next)) = rest.first() else {
                // The last part: the field takes the rest.
                if s.is_empty() {
                    return false;
                }
                out.push(s);
                return true;
            };
            // Shortest value first: each occurrence of the next literal after >= 1 char.
            let first = s.chars().next().map_or(0, char::len_utf8);
            if first == 0 {
                return false;
            }
            for (i, _) in s[first..].match_indices(next.as_str()) {
                let end = first + i;
                out.push(&s[..end]);
                if match_parts(rest, &s[end..], out) {
                    return true;
                }
                out.pop();
            }
            false
        }
    }
}

fn is_wav_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// A listed file: path, id, raw field values (label fields only), index.
struct Listed {
    path: PathBuf,
    id: String,
    values: Vec<String>,
    index: Option<u32>,
}

/// Lists the files and their raw label values; returns them with the label field names.
fn list(dir: &Path, labels: &AudioLabels) -> Result<(Vec<Listed>, Vec<String>), DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::format(
            dir,
            "not a folder (expected a folder of WAV files)",
        ));
    }
    let top = entries(dir)?;
    match labels {
        AudioLabels::SubFolders => {
            let mut out = Vec::new();
            for (name, path, _) in top.iter().filter(|e| e.2) {
                let mut found = Vec::new();
                collect_files(path, name, 1, is_wav_name, &mut found)?;
                out.extend(found.into_iter().map(|(path, id)| Listed {
                    path,
                    id,
                    values: vec![name.clone()],
                    index: None,
                }));
            }
            let flat = top.iter().filter(|e| !e.2 && is_wav_name(&e.1)).count();
            if out.is_empty() {
                return Err(DataError::Missing {
                    dir: dir.to_path_buf(),
                    what: "WAV files in class sub-folders".into(),
                    looked_for: vec!["CLASS/*.wav".into()],
                });
            }
            if flat > 0 {
                tracing::warn!(
                    "{}: {flat} WAV file(s) directly in the folder ignored (the clips are in class sub-folders)",
                    dir.display()
                );
            }
            Ok((out, vec!["class".to_string()]))
        }
        AudioLabels::Pattern(p) => {
            let pattern = FilePattern::parse(p)?;
            let fields = pattern.fields();
            let index_pos = fields.iter().position(|f| *f == INDEX_FIELD);
            let label_fields: Vec<String> = fields
                .iter()
                .filter(|f| **f != INDEX_FIELD)
                .map(|f| f.to_string())
                .collect();
            let mut out = Vec::new();
            for (name, path, _) in top.iter().filter(|e| !e.2 && is_wav_name(&e.1)) {
                let Some(vals) = pattern.match_name(name) else {
                    return Err(DataError::format(
                        path,
                        format!(
                            "file name does not match the pattern '{}'",
                            pattern.as_str()
                        ),
                    ));
                };
                let index = match index_pos {
                    Some(i) => Some(vals[i].parse::<u32>().map_err(|_| {
                        DataError::format(
                            path,
                            format!(
                                "{{index}} is '{}', not a non-negative integer (pattern '{}')",
                                vals[i],
                                pattern.as_str()
                            ),
                        )
                    })?),
                    None => None,
                };
                let values = vals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != index_pos)
                    .map(|(_, v)| v.to_string())
                    .collect();
                out.push(Listed {
                    path: path.clone(),
                    id: name.clone(),
                    values,
                    index,
                });
            }
            if out.is_empty() {
                return Err(DataError::Missing {
                    dir: dir.to_path_buf(),
                    what: "WAV files".into(),
                    looked_for: vec![pattern.as_str().to_string()],
                });
            }
            Ok((out, label_fields))
        }
    }
}

/// Sorted class names: numerically when every value is an integer (so `10` comes after `9`;
/// ties such as `01` and `1` by text), otherwise by text.
fn sorted_classes(values: BTreeSet<&str>) -> Vec<String> {
    let mut v: Vec<&str> = values.into_iter().collect();
    let nums: Option<Vec<i128>> = v.iter().map(|s| s.parse::<i128>().ok()).collect();
    if let Some(nums) = nums {
        let mut pairs: Vec<(i128, &str)> = nums.into_iter().zip(v).collect();
        pairs.sort();
        v = pairs.into_iter().map(|(_, s)| s).collect();
    }
    v.into_iter().map(String::from).collect()
}

/// Reads a folder of WAV clips (see [`AudioLabels`] for the layouts), at `sample_rate` Hz:
/// clips at another rate are resampled ([`resample`]). Files are read in parallel and kept in
/// sorted order of their ids; hidden files and folders are ignored; the extension `wav` is
/// matched in any case. Class names are sorted per field (numerically when all are
/// integers) and numbered from 0.
///
/// Errors name the file: an unreadable or invalid WAV file (as the image folder reader does
/// by default; see [`load_audio_dir_skip_bad`] to skip them), a file name that does not match
/// the pattern (the error quotes the pattern), a non-numeric `{index}`. A folder without WAV
/// files is [`DataError::Missing`].
pub fn load_audio_dir(
    dir: &Path,
    labels: &AudioLabels,
    sample_rate: u32,
) -> Result<AudioDataset, DataError> {
    load_impl(dir, labels, sample_rate, false).map(|(d, _)| d)
}

/// [`load_audio_dir`], skipping (with a warning) WAV files that cannot be read or decoded
/// instead of failing; returns the number skipped. File names that do not match the pattern
/// are still errors.
pub fn load_audio_dir_skip_bad(
    dir: &Path,
    labels: &AudioLabels,
    sample_rate: u32,
) -> Result<(AudioDataset, usize), DataError> {
    load_impl(dir, labels, sample_rate, true)
}

fn load_impl(
    dir: &Path,
    labels: &AudioLabels,
    sample_rate: u32,
    skip_bad: bool,
) -> Result<(AudioDataset, usize), DataError> {
    if sample_rate == 0 || sample_rate > super::wav::MAX_SAMPLE_RATE {
        return Err(DataError::Options(format!(
            "audio sample rate {sample_rate} Hz must be in [1, {}]",
            super::wav::MAX_SAMPLE_RATE
        )));
    }
    let (listed, label_fields) = list(dir, labels)?;
    let decoded: Vec<Result<Vec<f32>, DataError>> = listed
        .par_iter()
        .map(|l| {
            let (x, sr) = read_wav(&l.path)?;
            Ok(if sr == sample_rate {
                x
            } else {
                resample(&x, sr, sample_rate)
            })
        })
        .collect();
    let mut kept = Vec::with_capacity(listed.len());
    let mut skipped = 0;
    for (l, r) in listed.into_iter().zip(decoded) {
        match r {
            Ok(x) => kept.push((l, x)),
            Err(e @ (DataError::Format { .. } | DataError::Io { .. })) if skip_bad => {
                tracing::warn!("skipped: {e}");
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if kept.is_empty() {
        return Err(DataError::Missing {
            dir: dir.to_path_buf(),
            what: format!("readable WAV files ({skipped} unreadable skipped)"),
            looked_for: vec!["*.wav".into()],
        });
    }
    if skipped > 0 {
        tracing::warn!(
            "{}: skipped {skipped} unreadable WAV file(s)",
            dir.display()
        );
    }
    let class_names: Vec<Vec<String>> = (0..label_fields.len())
        .map(|f| sorted_classes(kept.iter().map(|(l, _)| l.values[f].as_str()).collect()))
        .collect();
    let clips = kept
        .into_iter()
        .map(|(l, samples)| AudioClip {
            labels: l
                .values
                .iter()
                .zip(&class_names)
                .map(|(v, names)| names.iter().position(|n| n == v).unwrap_or(0) as u32)
                .collect(),
            samples,
            id: l.id,
            index: l.index,
        })
        .collect();
    let name = dir
        .file_name()
        .map_or_else(|| "audio".to_string(), |n| n.to_string_lossy().into_owned());
    Ok((
        AudioDataset {
            name,
            clips,
            sample_rate,
            label_fields,
            class_names,
        },
        skipped,
    ))
}

impl AudioDataset {
    /// Number of clips.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// True when there are no clips.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// The position of a label field, by name.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.label_fields.iter().position(|f| f == name)
    }

    /// The labels of field `field` (an index into `label_fields`), one per clip.
    ///
    /// Panics when `field` is out of range.
    pub fn labels(&self, field: usize) -> Vec<u32> {
        assert!(
            field < self.label_fields.len(),
            "label field {field} of {}",
            self.label_fields.len()
        );
        self.clips.iter().map(|c| c.labels[field]).collect()
    }

    /// Number of classes of field `field` (0 when out of range).
    pub fn num_classes(&self, field: usize) -> usize {
        self.class_names.get(field).map_or(0, Vec::len)
    }

    /// Total duration in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.clips.iter().map(|c| c.samples.len()).sum::<usize>() as f64
            / self.sample_rate.max(1) as f64
    }

    /// The clips at `idx`, in that order (same fields and class names).
    ///
    /// Panics when an index is out of range.
    pub fn subset(&self, idx: &[usize]) -> AudioDataset {
        AudioDataset {
            name: self.name.clone(),
            clips: self.clips.subset(idx),
            sample_rate: self.sample_rate,
            label_fields: self.label_fields.clone(),
            class_names: self.class_names.clone(),
        }
    }

    /// `(train, test)`: clips whose recording index is below `test_below` are test, the others
    /// (including clips without an index) train; order is kept. For the Free Spoken Digit
    /// Dataset the usual split is `test_below = 5` (recordings 0–4 of every speaker and digit).
    pub fn split_by_index(&self, test_below: u32) -> (AudioDataset, AudioDataset) {
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|&i| self.clips[i].index.is_some_and(|x| x < test_below));
        (self.subset(&train), self.subset(&test))
    }

    /// `(train, validation)`: a seeded random `fraction` of the clips (clamped to `[0, 1]`)
    /// moves to validation, stratified by the first label field when there is one (each class
    /// gives `round(count * fraction)` clips), with [`crate::source::split_indices`]. Both
    /// parts keep the clips' order. Take it out of the training split, so that test is used
    /// once.
    pub fn split_validation(&self, fraction: f32, seed: u64) -> (AudioDataset, AudioDataset) {
        let labels = (!self.label_fields.is_empty()).then(|| self.labels(0));
        let frac = if fraction.is_nan() { 0.0 } else { fraction };
        let (mut tr, mut va) =
            crate::source::split_indices(self.len(), labels.as_deref(), frac.clamp(0.0, 1.0), seed);
        tr.sort_unstable();
        va.sort_unstable();
        (self.subset(&tr), self.subset(&va))
    }

    /// The log-mel spectrogram of every clip, computed in parallel, in clip order. Fails
    /// ([`DataError::Options`]) when the spectrogram's sample rate is not the data set's.
    pub fn log_mels(&self, mel: &MelSpectrogram) -> Result<Vec<LogMel>, DataError> {
        if mel.config().sample_rate != self.sample_rate {
            return Err(DataError::Options(format!(
                "mel.sample_rate {} Hz differs from the data set '{}' at {} Hz",
                mel.config().sample_rate,
                self.name,
                self.sample_rate
            )));
        }
        Ok(self
            .clips
            .par_iter()
            .map(|c| mel.compute(&c.samples))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_pattern_matches_fsdd_names() {
        let p = FilePattern::parse("{digit}_{speaker}_{index}.wav").unwrap();
        assert_eq!(p.fields(), vec!["digit", "speaker", "index"]);
        assert_eq!(
            p.match_name("7_george_12.wav"),
            Some(vec!["7", "george", "12"])
        );
        // Later fields may hold the separator when earlier ones cannot.
        assert_eq!(
            p.match_name("7_yweweler_x_3.wav"),
            Some(vec!["7", "yweweler", "x_3"])
        );
        assert_eq!(p.match_name("7_george.wav"), None);
        assert_eq!(p.match_name("7__3.wav"), None);
        assert_eq!(p.match_name("7_george_3.WAV"), None);
    }

    #[test]
    fn audio_classes_sort_numerically_when_all_integers() {
        let s = |v: &[&str]| sorted_classes(v.iter().copied().collect());
        assert_eq!(s(&["10", "9", "1", "0"]), vec!["0", "1", "9", "10"]);
        assert_eq!(s(&["b", "10", "9"]), vec!["10", "9", "b"]);
        assert_eq!(s(&["-1", "2"]), vec!["-1", "2"]);
    }
}
