//! TOML recipes: parsed and validated (every check that needs no data), as `selfsup pretrain
//! --config` does first.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = selfsup::recipe::Recipe::from_toml(text, "fuzz.toml");
    }
});
