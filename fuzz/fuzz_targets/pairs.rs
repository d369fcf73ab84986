//! Image–text pairs (the `pairs:` reader): any bytes as `pairs.jsonl`, beside one valid 4×4
//! PNG `a.png` and one file `b.png` that is not an image, give the pairs or an error naming the
//! file and line; pairs that load are split and their label fields read, as a run does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use selfsup_data::pairs::load_pairs;

#[path = "common.rs"]
mod common;

/// A 4×4 RGBA PNG (half-transparent red).
fn png() -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(4, 4, image::Rgba([255, 0, 0, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fuzz_target!(|data: &[u8]| {
    let file = common::input_file("pairs.jsonl", data);
    let dir = file.parent().unwrap();
    if !dir.join("a.png").exists() {
        std::fs::write(dir.join("a.png"), png()).unwrap();
        std::fs::write(dir.join("b.png"), b"not a png").unwrap();
    }
    if let Ok(p) = load_pairs(&file, 3) {
        let (train, _val, test) = p.split(0.2, 0.2, 7);
        assert_eq!(train.len() + _val.len() + test.len(), p.len());
        for f in &p.label_fields {
            let (ids, names) = p.class_ids(f);
            assert!(ids.iter().all(|&i| (i as usize) < names.len()));
        }
    }
});
