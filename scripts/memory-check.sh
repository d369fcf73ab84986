#!/usr/bin/env bash
# Memory stays flat over a long run, for every method: each method trains EPOCHS epochs (20 by
# default) with its digits recipe (configs/digits-<method>.toml; the text methods with
# configs/kjv-<method>.toml on the first 3,000 verses; graphcl with configs/mutag-graphcl.toml,
# cpc with configs/fsdd-cpc.toml, clip with configs/emoji-clip.toml), and metrics.jsonl logs
# after every epoch:
#   heap_mb            the live heap at the epoch's end (counted by the allocator: exact)
#   heap_peak_mb       the live heap's highest point in the epoch (exact: what the run needs)
#   rss_mb             resident memory at the epoch's end
#   epoch_peak_rss_mb  resident memory's highest point in the epoch (Linux's VmHWM, reset at
#                      every epoch's end)
#   peak_rss_mb        resident memory's highest point in the whole run
# The check fails when, from epoch 2 to the last, the live heap, its peak, resident memory at
# the epoch's end or the run's peak (`peak_rss_mb`, the issue's criterion) grows by LIMIT % (5 by
# default) or more, or when resident memory (at the end, or the epoch's peak) has a trend of
# LIMIT % or more: the growth of a least-squares line through epochs 2..last.
# What keeps resident memory level (crates/selfsup-cli/src/main.rs): no transparent huge
# pages, a cache of large freed blocks shared by the threads (selfsup::block_cache) in front of
# mimalloc, which hands freed pages back at once, and at each epoch's end the cache emptied and
# every thread's heap collected.
#
#   scripts/memory-check.sh [EPOCHS] [OUT]      # default: 20 epochs, runs/memory-check
#   SKIP_TRAINING=1 scripts/memory-check.sh 20 OUT   # only the table, from the runs in OUT
#
# About 25 minutes on 2 cores. METHODS="simclr gpt" limits it to some methods. Exit status 1
# when any method grows more than the limit; the table goes to stdout and OUT/memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-20}
out=${2:-runs/memory-check}
limit=${LIMIT:-5}
# every method of the registry (crates/selfsup/src/method/mod.rs): the test
# crates/selfsup-cli/tests/scripts.rs fails when this list and the registry differ
all="simclr moco-v2 moco-v3 byol simsiam barlow-twins vicreg dino mae dae gpt mlm graphcl cpc clip"
methods=${METHODS:-$all}
if [[ $epochs -lt 3 ]]; then
    echo "EPOCHS must be at least 3 (growth is measured from epoch 2)" >&2
    exit 2
fi

mkdir -p "$out"
[[ -n ${SKIP_TRAINING:-} ]] || cargo build --release -p selfsup-cli
bin=./target/release/selfsup

for m in $methods; do
    [[ -z ${SKIP_TRAINING:-} ]] || continue
    dir="$out/$m"
    rm -rf "$dir"
    case $m in
        gpt | mlm)
            # 3,000 verses, so that 20 epochs take a few minutes
            recipe="$out/kjv-$m.toml"
            sed -e 's#^spec = "tsv:\.\./\.\./shared#spec = "tsv:'"$PWD"'/../shared#' \
                -e 's/^seq_len = 64$/seq_len = 64\nlimit = 3000/' "configs/kjv-$m.toml" >"$recipe"
            ;;
        graphcl) recipe="configs/mutag-graphcl.toml" ;;
        cpc) recipe="configs/fsdd-cpc.toml" ;;
        clip) recipe="configs/emoji-clip.toml" ;;
        *) recipe="configs/digits-$m.toml" ;;
    esac
    echo "== $m: $epochs epochs ($recipe)" >&2
    "$bin" pretrain -q --no-eval --config "$recipe" --epochs "$epochs" --out "$dir"
done

python3 - "$out" "$limit" $methods <<'EOF'
import json, sys
out, limit, methods = sys.argv[1], float(sys.argv[2]), sys.argv[3:]

def growth(a, b):
    return 100.0 * (b - a) / a

def trend(ys):
    """Growth in % of the least-squares line through ys, from its first point to its last."""
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    slope = sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))
    first = my - slope * mx
    return 100.0 * slope * (n - 1) / first

rows, bad = [], []
for m in methods:
    lines = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl") if l.strip()]
    e2, last, tail = lines[1], lines[-1], lines[1:]
    peaks = [l["epoch_peak_rss_mb"] for l in tail]
    g = {
        "heap": growth(e2["heap_mb"], last["heap_mb"]),
        "heap_peak": growth(e2["heap_peak_mb"], last["heap_peak_mb"]),
        "rss": trend([l["rss_mb"] for l in tail]),
        "rss_growth": growth(e2["rss_mb"], last["rss_mb"]),
        "epoch_peak": trend(peaks),
        "run_peak": growth(e2["peak_rss_mb"], last["peak_rss_mb"]),
    }
    ok = all(g[k] < limit for k in g)
    if not ok:
        bad.append(m)
    rows.append(
        f"| {m} | {len(lines)} | {last['heap_mb']:.1f} | {g['heap']:+.1f} % | "
        f"{last['heap_peak_mb']:.1f} | {g['heap_peak']:+.1f} % | "
        f"{e2['rss_mb']:.0f} → {last['rss_mb']:.0f} | {g['rss_growth']:+.1f} % | "
        f"{g['rss']:+.1f} % | {min(peaks):.0f}–{max(peaks):.0f} | {g['epoch_peak']:+.1f} % | "
        f"{e2['peak_rss_mb']:.0f} → {last['peak_rss_mb']:.0f} | {g['run_peak']:+.1f} % | "
        f"{'ok' if ok else 'GROWS'} |")
table = "\n".join([
    "| method | epochs | live heap, last (MB) | growth from epoch 2 | heap peak, last (MB) | "
    "growth | RSS at end, epoch 2 → last (MB) | growth | trend | epoch's peak RSS, epochs 2.. (MB) | trend | "
    f"run's peak RSS, epoch 2 → last (MB) | growth | all gated < {limit:g} % |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
] + rows)
print(table)
open(f"{out}/memory.md", "w").write(table + "\n")
if bad:
    print(f"memory grows by {limit:g} % or more: {' '.join(bad)}", file=sys.stderr)
    sys.exit(1)
EOF
