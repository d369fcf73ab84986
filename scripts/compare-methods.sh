#!/usr/bin/env bash
# The one command behind the method table in BENCHMARKS.md: trains every method on
# Fashion-MNIST with its recipe (configs/fashion-mnist-<method>.toml) for the same number of
# epochs, evaluates each frozen encoder (weighted kNN, linear probe on all labels and on 1 %),
# the raw-pixel and random-init baselines once, and writes the table with `selfsup report`.
#
#   scripts/compare-methods.sh [EPOCHS] [OUT]     # default: 2 epochs, runs/compare-fashion-mnist
#
# About 95 minutes on 2 cores for 2 epochs. Each run is interrupted after half its epochs and
# continued with `--resume`, so the table also exercises exact resume (queues, EMA targets and
# DINO's centre included). Re-running the command skips methods already evaluated, so an
# interrupted comparison picks up where it stopped.
# Data: ../shared/data/fashion-mnist, or DATA=idx:DIR (see scripts/fetch-fashion-mnist.sh).
# METHODS="simclr byol" limits the comparison to some methods (no BENCHMARKS.md update then,
# unless BLOCK names the marked block to write). FINETUNE=1 also fine-tunes each encoder (all
# labels and 1 %) beside its random-init twin trained from scratch; BASELINES=each evaluates
# the baselines with every run (for methods with different encoders).
# The masked and reconstructive table of BENCHMARKS.md:
#   METHODS="mae dae" FINETUNE=1 BASELINES=each BLOCK=masked scripts/compare-methods.sh 2 runs/compare-masked
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-2}
out=${2:-runs/compare-fashion-mnist}
all_methods="simclr dino simsiam byol moco-v2 moco-v3 barlow-twins vicreg"
methods=${METHODS:-$all_methods}
data=()
[[ -n "${DATA:-}" ]] && data=(--data "$DATA")
stop=$(( epochs / 2 ))

cargo build --release -p selfsup-cli
bin=./target/release/selfsup
mkdir -p "$out"

failed=()
first=1
for m in $methods; do
    dir="$out/$m"
    baselines=()
    [[ $first -eq 1 || "${BASELINES:-}" == each ]] && baselines=(--baselines)
    first=0
    finetune=()
    [[ -n "${FINETUNE:-}" ]] && finetune=(--finetune)
    if [[ -f "$dir/eval-all.json" ]]; then
        echo "== $m: already evaluated ($dir/eval-all.json)"
        continue
    fi
    echo "== $m ($(date +%H:%M:%S))"
    if [[ ! -d "$dir/checkpoints" ]]; then
        rm -rf "$dir"
        if (( stop >= 1 )); then
            $bin pretrain -c "configs/fashion-mnist-$m.toml" "${data[@]}" --epochs "$epochs" \
                --stop-after "$stop" --out "$dir" --quiet || { failed+=("$m"); continue; }
        else
            $bin pretrain -c "configs/fashion-mnist-$m.toml" "${data[@]}" --epochs "$epochs" \
                --no-eval --out "$dir" --quiet || { failed+=("$m"); continue; }
        fi
    fi
    $bin pretrain --resume "$dir" --no-eval --quiet || { failed+=("$m"); continue; }
    $bin eval all --run "$dir" "${baselines[@]}" "${finetune[@]}" || { failed+=("$m"); continue; }
done

md=()
[[ -z "${METHODS:-}" ]] && md=(--markdown BENCHMARKS.md)
[[ -n "${BLOCK:-}" ]] && md=(--markdown BENCHMARKS.md --block "$BLOCK")
runs=()
for m in $methods; do [[ -f "$out/$m/eval-all.json" ]] && runs+=("$out/$m"); done
$bin report "${runs[@]}" "${md[@]}"
if (( ${#failed[@]} )); then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
