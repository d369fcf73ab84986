//! One file of an image folder (PNG or JPEG), decoded, converted and resized as the loader
//! does, to 1 and 3 channels.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("image.png", data);
    for channels in [1, 3] {
        let _ = selfsup_data::source::folder::decode_image(&path, channels, (28, 28));
    }
});
