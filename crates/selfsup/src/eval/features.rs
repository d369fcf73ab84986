//! Features of a frozen encoder (no augmentation, BatchNorm in inference mode).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_data::{Image, Pipeline};

use crate::backbone::Backbone;

/// `(n × out_dim)` row-major features of `images`, computed in batches of `batch_size` on `device`.
pub fn encoder_features(
    encoder: &Backbone,
    pipeline: &Pipeline,
    images: &[Image],
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    let encoder = encoder.valid().to_device(device);
    let (c, h, w) = pipeline.out_shape();
    let mut out = Vec::with_capacity(images.len() * encoder.out_dim());
    let idx: Vec<usize> = (0..images.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let x = pipeline.plain_batch(images, chunk);
        let x = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), c, h, w]), device);
        let f = encoder.forward(x).into_data();
        out.extend_from_slice(f.as_slice::<f32>().expect("f32 features"));
    }
    out
}

/// The pixel baselines as features `(n × C·H·W)`, un-augmented: with `standardised`, as the
/// encoder sees them (`(x/255 − mean)/std` per channel); without, the raw values `x/255`.
pub fn pixel_features(pipeline: &Pipeline, images: &[Image], standardised: bool) -> Vec<f32> {
    let idx: Vec<usize> = (0..images.len()).collect();
    let mut x = pipeline.plain_batch(images, &idx);
    if !standardised {
        let (c, h, w) = pipeline.out_shape();
        let plane = h * w;
        for img in x.chunks_mut(c * plane) {
            for (ch, values) in img.chunks_mut(plane).enumerate() {
                let (m, s) = (pipeline.mean()[ch], pipeline.std()[ch]);
                values.iter_mut().for_each(|v| *v = *v * s + m);
            }
        }
    }
    x
}
