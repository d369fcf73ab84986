//! Audio: WAV reading and resampling, log-mel spectrograms, spectrogram augmentations
//! (SpecAugment masks, gain, noise, BYOL-A's log-mixup-exp and random resize crop) and
//! folders of labelled WAV clips.
//!
//! The usual path: [`load_audio_dir`] reads the clips at one sample rate,
//! [`AudioDataset::log_mels`] turns them into [`LogMel`]s with a [`MelSpectrogram`],
//! [`log_mel_mean_std`] gives the normalisation, and [`AudioPipeline::view`] produces
//! fixed-size, normalised, augmented views (deterministic from seed, epoch, index and view).
//!
//! ```no_run
//! use std::path::Path;
//! use selfsup_data::audio::*;
//!
//! let labels = AudioLabels::Pattern("{digit}_{speaker}_{index}.wav".into());
//! let all = load_audio_dir(Path::new("fsdd/recordings"), &labels, 8000)?;
//! let (train, test) = all.split_by_index(5);
//! let mel = MelSpectrogram::new(MelConfig::default())?;
//! let specs = train.log_mels(&mel)?;
//! let (mean, std) = log_mel_mean_std(&specs);
//! let pipe = AudioPipeline::new(AudioAugConfig::speech_default(), mel.n_mels(), 96, mean, std)?;
//! let v = pipe.view(&specs, 0, 1, 0, 0); // n_mels x 96, mel-major
//! assert_eq!(v.len(), 40 * 96);
//! # let _ = test;
//! # Ok::<(), selfsup_data::DataError>(())
//! ```

pub mod augment;
pub mod mel;
pub mod source;
pub mod wav;

pub use augment::{
    AudioAugConfig, AudioPipeline, GainConfig, MaskConfig, MixConfig, NoiseConfig,
    ResizeCropConfig, add_noise, centre_crop, freq_mask, freq_mask_band, gain, log_mixup_exp,
    random_resize_crop, random_time_crop, resize_bicubic, time_mask, time_mask_band,
};
pub use mel::{
    LogMel, MelConfig, MelSpectrogram, dct_ii_ortho, hz_to_mel, log_mel_mean_std, mel_to_hz,
};
pub use source::{
    AudioClip, AudioDataset, AudioLabels, FilePattern, load_audio_dir, load_audio_dir_skip_bad,
};
pub use wav::{read_wav, resample};
