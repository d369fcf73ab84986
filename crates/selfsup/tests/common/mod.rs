//! Fixtures shared by the integration tests (and the command line's).
// each test binary compiles this module; not all of them use every fixture
#![allow(dead_code)]

use std::path::Path;

/// A small TU graph set in `dir` (named `T`): `n` graphs, rings of 4–9 nodes, the even ones
/// with a chord (class `1`) and the odd ones without (class `-1`); 3 node labels.
pub fn tu_fixture(dir: &Path, n: usize) -> std::path::PathBuf {
    let root = dir.join("T");
    std::fs::create_dir_all(&root).unwrap();
    let (mut a, mut ind, mut gl, mut nl) =
        (String::new(), String::new(), String::new(), String::new());
    let mut base = 1;
    for g in 0..n {
        let k = 4 + g % 6;
        let mut edges: Vec<(usize, usize)> = (0..k).map(|i| (i, (i + 1) % k)).collect();
        if g % 2 == 0 {
            edges.push((0, k / 2));
        }
        for (u, v) in edges {
            a.push_str(&format!(
                "{}, {}\n{}, {}\n",
                base + u,
                base + v,
                base + v,
                base + u
            ));
        }
        for i in 0..k {
            ind.push_str(&format!("{}\n", g + 1));
            nl.push_str(&format!("{}\n", (i + g) % 3));
        }
        gl.push_str(if g % 2 == 0 { "1\n" } else { "-1\n" });
        base += k;
    }
    for (f, t) in [
        ("A", a),
        ("graph_indicator", ind),
        ("graph_labels", gl),
        ("node_labels", nl),
    ] {
        std::fs::write(root.join(format!("T_{f}.txt")), t).unwrap();
    }
    root
}

/// A small image–text set in `dir`: `n` 8×8 PNG images (a coloured square or stripes on a
/// transparent background) and `pairs.jsonl` with their captions (`red stripes (red,
/// stripes)`), `category` (the colour) and `subcategory` (the shape). Returns the file.
pub fn pairs_fixture(dir: &Path, n: usize) -> std::path::PathBuf {
    let colours = [
        ("red", [220u8, 30, 30]),
        ("green", [30, 200, 60]),
        ("blue", [40, 60, 230]),
        ("yellow", [240, 220, 40]),
    ];
    let shapes = ["square", "stripes"];
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut lines = String::new();
    for i in 0..n {
        let (cname, rgb) = colours[i % 4];
        let shape = shapes[(i / 4) % 2];
        let img = image::RgbaImage::from_fn(8, 8, |x, y| {
            let on = match shape {
                "square" => (2..6).contains(&x) && (2..6).contains(&y),
                _ => y % 2 == 0,
            };
            // a little variation per image, so no two are the same
            let shade = (i * 7 % 40) as u8;
            if on {
                image::Rgba([rgb[0].saturating_sub(shade), rgb[1], rgb[2], 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let name = format!("img/{i:03}.png");
        img.save(dir.join(&name)).unwrap();
        lines.push_str(&format!(
            "{{\"image\": \"{name}\", \"caption\": \"{cname} {shape} {i} ({cname}, {shape})\", \"category\": \"{cname}\", \"subcategory\": \"{shape}\"}}\n"
        ));
    }
    let f = dir.join("pairs.jsonl");
    std::fs::write(&f, lines).unwrap();
    f
}
