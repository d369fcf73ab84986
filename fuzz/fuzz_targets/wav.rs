//! WAV recordings (the audio folder reader): any bytes give samples or an error; samples are
//! resampled to 8 kHz when their rate differs and turned into a log-mel spectrogram, as the
//! loader does. The same bytes, as text, are also tried as a file-name pattern.
#![no_main]
use libfuzzer_sys::fuzz_target;
use selfsup_data::audio::{FilePattern, MelConfig, MelSpectrogram, read_wav, resample};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("clip.wav", data);
    if let Ok((samples, rate)) = read_wav(&path) {
        let samples = if rate == 8000 {
            samples
        } else {
            resample(&samples, rate, 8000)
        };
        let mel = MelSpectrogram::new(MelConfig::default()).unwrap();
        let _ = mel.log_mel(&samples);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = FilePattern::parse(text)
    {
        let _ = p.match_name("3_jackson_12.wav");
    }
});
