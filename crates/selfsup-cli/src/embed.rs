use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use selfsup::eval::encoder_features;
use selfsup::run::load_run;
use selfsup::run_dir::write_atomic;

#[derive(Parser)]
pub struct Args {
    /// The run folder written by `selfsup pretrain`.
    #[arg(long)]
    run: PathBuf,
    /// Data to embed (default: the run's data, its train, validation and test images; a text
    /// run: its train, validation and test documents).
    #[arg(long)]
    data: Option<String>,
    /// Output: `.csv` (id, split, label, features) or `.npy` (float32 n × d, with the ids,
    /// splits and labels in `<out>.ids.csv`).
    #[arg(long)]
    out: PathBuf,
    /// cpu, vulkan or cuda (default: the run's).
    #[arg(long)]
    device: Option<selfsup::device::DeviceChoice>,
}

fn npy_bytes(data: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per embedded item: id, split, label; then the features, row-major, and their width.
type Rows = (Vec<(String, &'static str, Option<u32>)>, Vec<f32>, usize);

/// Images: the run's encoder on the train, validation and test images (or on `--data`).
fn image_rows(a: &Args) -> anyhow::Result<Rows> {
    let (model, p) = load_run(&a.run, |r| {
        if let Some(d) = a.data.clone() {
            r.data.spec = d;
        }
        if let Some(d) = a.device {
            r.train.device = d;
        }
    })?;
    let enc = model.encoder();
    let bs = p.recipe.train.eval_batch_size;
    let mut rows = Vec::new();
    let mut feats = Vec::new();
    for (name, set) in [
        ("train", &p.split.train),
        ("val", &p.split.val),
        ("test", &p.split.test),
    ] {
        feats.extend(encoder_features(
            enc,
            &p.pipeline,
            &set.images,
            bs,
            &p.device,
        ));
        for i in 0..set.len() {
            rows.push((set.ids[i].clone(), name, set.labels.as_ref().map(|l| l[i])));
        }
    }
    Ok((rows, feats, enc.out_dim()))
}

/// Text: the sentence embedding of every document of the run's train, validation and test
/// splits (the pooling of the run's encoder).
fn text_rows(a: &Args) -> anyhow::Result<Rows> {
    if a.data.is_some() {
        bail!("--data: embedding other text than the run's is not built yet");
    }
    let (model, p) = selfsup::modality::text::load_text_run(&a.run, |r| {
        // one row per document: the documents in memory even for a streamed run
        r.data.in_memory = true;
        if let Some(d) = a.device {
            r.train.device = d;
        }
    })?;
    let enc = model.encoder();
    let mut rows = Vec::new();
    let mut feats = Vec::new();
    for (name, set) in [
        ("train", &p.split.train),
        ("val", &p.split.val),
        ("test", &p.split.test),
    ] {
        feats.extend(selfsup::modality::text_eval::text_features(enc, &p, set));
        for i in 0..set.len() {
            rows.push((set.ids[i].clone(), name, set.labels.as_ref().map(|l| l[i])));
        }
    }
    Ok((rows, feats, enc.out_dim()))
}

/// Image–text: every image and every caption of the run's train, validation and test pairs,
/// in the shared space (l2-normalised); ids `image:<file>` and `text:<caption>`.
fn pairs_rows(a: &Args) -> anyhow::Result<Rows> {
    use selfsup::burn::module::Module;
    use selfsup::modality::pairs::{clip_of, image_embeddings, load_pairs_run, text_embeddings};
    if a.data.is_some() {
        bail!("--data: embedding other pairs than the run's is not built yet");
    }
    if a.device.is_some() {
        bail!("--device: image-text runs embed on the run's device");
    }
    let (model, p) = load_pairs_run(&a.run)?;
    let valid = model.valid();
    let clip = clip_of(&valid)?;
    let mut rows = Vec::new();
    let mut feats = Vec::new();
    let mut d = 0;
    for (name, set) in [("train", &p.train), ("val", &p.val), ("test", &p.test)] {
        let (img, e) = image_embeddings(clip, &p, &set.pairs.images);
        let (txt, _) = text_embeddings(clip, &p, &set.pairs.captions);
        d = e;
        feats.extend(img);
        feats.extend(txt);
        for path in &set.pairs.image_paths {
            rows.push((format!("image:{path}"), name, None));
        }
        for c in &set.pairs.captions {
            rows.push((format!("text:{c}"), name, None));
        }
    }
    Ok((rows, feats, d))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ext = a
        .out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "csv" && ext != "npy" {
        bail!(
            "--out {}: the file name must end in .csv or .npy",
            a.out.display()
        );
    }
    let recipe = selfsup::recipe::Recipe::load(&a.run.join("recipe.toml")).ok();
    let is_text = recipe.as_ref().is_some_and(|r| r.is_text());
    let is_pairs = recipe.as_ref().is_some_and(|r| r.is_pairs());
    let (rows, feats, d) = if is_pairs {
        pairs_rows(&a)?
    } else if is_text {
        text_rows(&a)?
    } else {
        image_rows(&a)?
    };
    let n = rows.len();
    let meta = |rows: &[(String, &str, Option<u32>)]| {
        let mut s = String::from("id,split,label\n");
        for (id, split, label) in rows {
            s.push_str(&format!(
                "{},{split},{}\n",
                csv_field(id),
                label.map_or(String::new(), |l| l.to_string())
            ));
        }
        s
    };
    if ext == "npy" {
        write_atomic(&a.out, &npy_bytes(&feats, n, d))?;
        let ids = PathBuf::from(format!("{}.ids.csv", a.out.display()));
        write_atomic(&ids, meta(&rows).as_bytes())?;
        eprintln!(
            "wrote {n} × {d} features to {} (ids in {})",
            a.out.display(),
            ids.display()
        );
    } else {
        let mut buf = Vec::new();
        write!(buf, "id,split,label")?;
        for j in 0..d {
            write!(buf, ",f{j}")?;
        }
        writeln!(buf)?;
        for (i, (id, split, label)) in rows.iter().enumerate() {
            write!(
                buf,
                "{},{split},{}",
                csv_field(id),
                label.map_or(String::new(), |l| l.to_string())
            )?;
            for v in &feats[i * d..(i + 1) * d] {
                write!(buf, ",{v}")?;
            }
            writeln!(buf)?;
        }
        write_atomic(&a.out, &buf)?;
        eprintln!("wrote {n} × {d} features to {}", a.out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let b = super::npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hl + 24);
        assert_eq!(
            f32::from_le_bytes(b[10 + hl..14 + hl].try_into().unwrap()),
            1.0
        );
    }
}
