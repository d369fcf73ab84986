//! Fixtures shared by the integration tests.

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
