//! IDX images and labels (MNIST's format), gzipped or not: any bytes give images, labels or
//! an error, never a panic, a hang or an allocation beyond what the input justifies.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("train-images-idx3-ubyte", data);
    let _ = selfsup_data::source::idx::read_idx_images(&path);
    let _ = selfsup_data::source::idx::read_idx_labels(&path);
});
