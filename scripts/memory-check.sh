#!/usr/bin/env bash
# Memory stays flat over a long run, for every method: each method trains EPOCHS epochs (20 by
# default) with its digits recipe (configs/digits-<method>.toml; the text methods with
# configs/kjv-<method>.toml on the first 3,000 verses; graphcl with configs/mutag-graphcl.toml),
# and neither the live heap (`heap_mb`, counted by the allocator: exact) nor the peak resident
# set size (`peak_rss_mb`) that metrics.jsonl logs after every epoch may grow by more than
# LIMIT % (5 by default) from epoch 2 to the last. The resident set size now (`rss_mb`) is
# shown too; it also holds freed pages the allocator hands back only after a second unused, so
# it moves by ±15 % from one epoch to the next with the moment it is read.
#
#   scripts/memory-check.sh [EPOCHS] [OUT]      # default: 20 epochs, runs/memory-check
#
# About 20 minutes on 2 cores. METHODS="simclr gpt" limits it to some methods. Exit status 1
# when any method grows more than the limit; the table goes to stdout and OUT/memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-20}
out=${2:-runs/memory-check}
limit=${LIMIT:-5}
all="simclr moco-v2 moco-v3 byol simsiam barlow-twins vicreg dino mae dae gpt mlm graphcl"
methods=${METHODS:-$all}
if [[ $epochs -lt 3 ]]; then
    echo "EPOCHS must be at least 3 (growth is measured from epoch 2)" >&2
    exit 2
fi

cargo build --release -p selfsup-cli
bin=./target/release/selfsup
mkdir -p "$out"

for m in $methods; do
    dir="$out/$m"
    rm -rf "$dir"
    case $m in
        gpt | mlm)
            # 3,000 verses, so that 20 epochs take a few minutes
            recipe="$out/kjv-$m.toml"
            sed -e 's#^spec = "tsv:\.\./shared#spec = "tsv:'"$PWD"'/../shared#' \
                -e 's/^seq_len = 64$/seq_len = 64\nlimit = 3000/' "configs/kjv-$m.toml" >"$recipe"
            ;;
        graphcl) recipe="configs/mutag-graphcl.toml" ;;
        *) recipe="configs/digits-$m.toml" ;;
    esac
    echo "== $m: $epochs epochs ($recipe)" >&2
    "$bin" pretrain -q --no-eval --config "$recipe" --epochs "$epochs" --out "$dir"
done

python3 - "$out" "$limit" $methods <<'EOF'
import json, sys
out, limit, methods = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rows, bad = [], []
for m in methods:
    lines = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl") if l.strip()]
    e2, last = lines[1], lines[-1]
    growth = {k: 100.0 * (last[k] - e2[k]) / e2[k] for k in ("heap_mb", "rss_mb", "peak_rss_mb")}
    ok = growth["heap_mb"] < limit and growth["peak_rss_mb"] < limit
    if not ok:
        bad.append(m)
    rows.append(f"| {m} | {len(lines)} | {e2['heap_mb']:.1f} | {last['heap_mb']:.1f} | "
                f"{growth['heap_mb']:+.1f} % | {e2['rss_mb']:.0f} | {last['rss_mb']:.0f} | "
                f"{e2['peak_rss_mb']:.0f} | {last['peak_rss_mb']:.0f} | "
                f"{growth['peak_rss_mb']:+.1f} % | {'ok' if ok else 'GROWS'} |")
table = "\n".join([
    f"| method | epochs | live heap epoch 2 (MB) | heap last | growth | RSS now epoch 2 (MB) | "
    f"RSS now last | peak RSS epoch 2 (MB) | peak last | growth | both < {limit:g} % |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
] + rows)
print(table)
open(f"{out}/memory.md", "w").write(table + "\n")
if bad:
    print(f"memory grows by {limit:g} % or more: {' '.join(bad)}", file=sys.stderr)
    sys.exit(1)
EOF
