//! `selfsup search`: the images of an image–text (CLIP) run nearest to a text, in the run's
//! shared space: a ranked list and a PNG strip.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use selfsup::burn::module::Module;
use selfsup::modality::pairs::{clip_of, image_embeddings, load_pairs_run, text_embeddings};

#[derive(Parser)]
pub struct Args {
    /// The run folder of an image–text (`clip`) run.
    #[arg(long)]
    run: PathBuf,
    /// The text to search for, e.g. "a red heart".
    #[arg(long)]
    text: String,
    /// How many images to list.
    #[arg(short, long, default_value_t = 8)]
    k: usize,
    /// Which images: `all` (train, validation and test) or `test`.
    #[arg(long, default_value = "all")]
    split: String,
    /// The PNG strip of the nearest images, best first (default: RUN/search.png).
    #[arg(long)]
    png: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.k == 0 {
        bail!("-k: must be at least 1");
    }
    if a.text.trim().is_empty() {
        bail!("--text: empty");
    }
    let (model, p) = load_pairs_run(&a.run)?;
    let splits = match a.split.as_str() {
        "all" => vec![("train", &p.train), ("val", &p.val), ("test", &p.test)],
        "test" => vec![("test", &p.test)],
        other => bail!("--split {other}: must be 'all' or 'test'"),
    };
    let valid = model.valid();
    let clip = clip_of(&valid)?;
    let (q, e) = text_embeddings(clip, &p, std::slice::from_ref(&a.text));
    let mut hits: Vec<(f32, &str, usize)> = Vec::new();
    for (name, s) in &splits {
        let (img, _) = image_embeddings(clip, &p, &s.pairs.images);
        for i in 0..s.pairs.len() {
            let score = img[i * e..(i + 1) * e]
                .iter()
                .zip(&q)
                .map(|(x, y)| x * y)
                .sum::<f32>();
            hits.push((score, name, i));
        }
    }
    hits.sort_by(|x, y| y.0.total_cmp(&x.0));
    hits.truncate(a.k);
    let set = |name: &str| splits.iter().find(|s| s.0 == name).expect("a split").1;
    println!("rank  cosine  split  image  caption");
    let mut images = Vec::new();
    for (r, (score, name, i)) in hits.iter().enumerate() {
        let s = &set(name).pairs;
        println!(
            "{:>4}  {score:>6.3}  {name:<5}  {}  {}",
            r + 1,
            s.image_paths[*i],
            s.captions[*i]
        );
        images.push(s.images[*i].clone());
    }
    let png = a.png.unwrap_or_else(|| a.run.join("search.png"));
    let scale = (64 / p.size).max(1);
    selfsup_data::save_views_grid(&png, &images[..1], &[images[1..].to_vec()], scale)?;
    eprintln!(
        "wrote the {} nearest images to {}",
        images.len(),
        png.display()
    );
    Ok(())
}
