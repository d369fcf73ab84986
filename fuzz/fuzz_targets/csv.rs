//! CSV images (one image per line, optional label and shape header), gzipped or not.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("images.csv", data);
    let _ = selfsup_data::source::csv::load_csv(&path, "fuzz");
});
