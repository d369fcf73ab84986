#!/usr/bin/env bash
# The one command behind BENCHMARKS.md: builds selfsup (release), installs the PyTorch reference
# (benches/reference/install.sh, a virtual environment), checks that both compute the same loss
# and FLOPs on the same weights and inputs, runs both benchmarks on this machine, and rewrites
# the table in BENCHMARKS.md with the ratios.
#
#   benches/run.sh            # everything (about 15 minutes on 2 cores)
#   benches/run.sh --quick    # smoke test of the whole chain (numbers meaningless)
#
# Output: target/bench/{selfsup,selfsup-burn-ops,pytorch}.json and the updated BENCHMARKS.md
# (not updated with --quick).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[[ "${1:-}" == "--quick" ]] && quick=(--quick)
out=target/bench
mkdir -p "$out"
threads=$(nproc)

cargo build --release -p selfsup-cli
benches/reference/install.sh
py=benches/reference/.venv/bin/python

echo "== loss and FLOP agreement on the same weights and inputs"
rm -rf "$out/check"
./target/release/selfsup bench --only step-a,step-b,step-c,step-vit,step-gpt,step-mlm --quick --check-dir "$out/check" >/dev/null
$py benches/reference/check.py "$out/check" --threads "$threads"

echo "== selfsup"
./target/release/selfsup bench "${quick[@]}" --json "$out/selfsup.json"
echo "== selfsup with Burn's own convolution and batch norm (SELFSUP_BURN_OPS=1)"
SELFSUP_BURN_OPS=1 ./target/release/selfsup bench "${quick[@]}" \
    --only step-a,step-b,step-c,loader-step --json "$out/selfsup-burn-ops.json"
echo "== PyTorch"
$py benches/reference/bench.py "${quick[@]}" --threads "$threads" --stream-dir "$out/stream-fashion" --json "$out/pytorch.json"

md=()
[[ ${#quick[@]} -eq 0 ]] && md=(--markdown BENCHMARKS.md)
python3 benches/compare.py "$out/selfsup.json" "$out/pytorch.json" \
    --burn "$out/selfsup-burn-ops.json" "${md[@]}"
