//! The method lists outside the method registry (`selfsup::method::METHOD_NAMES`) agree with it:
//! `scripts/memory-check.sh`'s list of methods, and the `method-*` lines `selfsup bench --list`
//! prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use selfsup::method::{METHOD_NAMES, MethodConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The words of the script's `all="..."` line.
fn memory_check_methods() -> Vec<String> {
    let path = repo().join("scripts/memory-check.sh");
    let script = std::fs::read_to_string(&path).expect("scripts/memory-check.sh");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("all="))
        .expect("an all=\"...\" line in scripts/memory-check.sh");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn memory_check_covers_every_method_of_the_registry() {
    let listed = memory_check_methods();
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), listed.len(), "a method twice: {listed:?}");
    let mut registry: Vec<String> = METHOD_NAMES.iter().map(|s| s.to_string()).collect();
    registry.sort();
    assert_eq!(
        sorted, registry,
        "scripts/memory-check.sh's methods differ from the registry (crates/selfsup/src/method/mod.rs)"
    );
    // each has its recipe: an arm of the script's `case` names it, or the default arm's
    // configs/digits-<method>.toml exists
    let script = std::fs::read_to_string(repo().join("scripts/memory-check.sh")).unwrap();
    let arms: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().split_once(')').map(|(pattern, _)| pattern))
        .filter(|p| {
            p.chars()
                .all(|c| c.is_ascii_lowercase() || "0123456789-| ".contains(c))
        })
        .flat_map(|p| p.split('|').map(str::trim))
        .collect();
    for m in &listed {
        assert!(
            arms.contains(&m.as_str()) || repo().join(format!("configs/digits-{m}.toml")).is_file(),
            "scripts/memory-check.sh has no recipe for {m}"
        );
    }
}

#[test]
fn bench_list_has_a_method_line_per_two_view_image_method() {
    let o = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["bench", "--list"])
        .output()
        .expect("run selfsup");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for id in [
        "gemm",
        "step-a",
        "step-c",
        "step-vit",
        "loader-stream",
        "knn",
        "linear",
    ] {
        assert!(ids.iter().any(|i| i == id), "no line {id} in {ids:?}");
    }
    let methods: Vec<&str> = ids
        .iter()
        .filter_map(|i| i.strip_prefix("method-"))
        .collect();
    for name in METHOD_NAMES {
        let m = MethodConfig::from_name(name).unwrap();
        let two_view_images =
            m.input_kind() == selfsup::method::InputKind::Images && m.num_views() == 2;
        if two_view_images {
            assert!(methods.contains(name), "no line method-{name} in {ids:?}");
        }
    }
    for m in &methods {
        assert!(
            METHOD_NAMES.contains(m),
            "method-{m} is not a registered method"
        );
    }
    // the ids benches/run.sh passes to `--only` exist
    let run_sh = std::fs::read_to_string(repo().join("benches/run.sh")).unwrap();
    for only in run_sh.split("--only ").skip(1) {
        let list = only.split_whitespace().next().unwrap_or_default();
        for id in list.split(',').filter(|s| !s.starts_with('$')) {
            assert!(ids.iter().any(|i| i == id), "benches/run.sh: no line {id}");
        }
    }
}

/// `scripts/compare-methods.sh` compares the joint-embedding image methods on Fashion-MNIST:
/// each name in its `all_methods` list is a method of the registry, trains on images, and has
/// its `configs/fashion-mnist-<method>.toml`; and every registry method with such a recipe
/// that takes the two-view ResNet step is in the list (a new method is not left out silently).
#[test]
fn compare_methods_lists_registry_methods_with_their_recipes() {
    let script = std::fs::read_to_string(repo().join("scripts/compare-methods.sh")).unwrap();
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("all_methods="))
        .expect("an all_methods=\"...\" line in scripts/compare-methods.sh");
    let listed: Vec<&str> = line.trim_matches('"').split_whitespace().collect();
    assert!(!listed.is_empty());
    for m in &listed {
        assert!(METHOD_NAMES.contains(m), "{m} is not in the registry");
        let c = MethodConfig::from_name(m).unwrap();
        assert_eq!(c.input_kind(), selfsup::method::InputKind::Images, "{m}");
        assert!(
            repo()
                .join(format!("configs/fashion-mnist-{m}.toml"))
                .is_file(),
            "{m} has no configs/fashion-mnist-{m}.toml"
        );
    }
    for m in METHOD_NAMES {
        let c = MethodConfig::from_name(m).unwrap();
        let joint = c.input_kind() == selfsup::method::InputKind::Images
            && repo()
                .join(format!("configs/fashion-mnist-{m}.toml"))
                .is_file();
        if joint && !listed.contains(m) {
            // the masked and reconstructive methods are compared on their own (METHODS="mae dae")
            assert!(
                ["mae", "dae"].contains(m),
                "{m} has a Fashion-MNIST recipe but scripts/compare-methods.sh leaves it out"
            );
        }
    }
}
