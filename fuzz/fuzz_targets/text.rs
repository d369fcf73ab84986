//! Text corpora: a plain text file and a TSV file with a header (text and label columns),
//! gzipped or not, strict and skipping bad lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use selfsup_data::text::source::{TextOptions, TextSource, load_text};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let txt = common::input_file("corpus.txt", data);
    let tsv = common::input_file("corpus.tsv", data);
    for skip_bad_lines in [false, true] {
        let plain = TextOptions {
            skip_bad_lines,
            ..TextOptions::default()
        };
        let _ = load_text(&TextSource::Text(txt.clone()), &plain);
        let labelled = TextOptions {
            text_column: "text".into(),
            label_column: Some("label".into()),
            ..plain
        };
        let _ = load_text(&TextSource::Tsv(tsv.clone()), &labelled);
    }
});
