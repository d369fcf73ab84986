#!/usr/bin/env bash
# The one command behind the BYOL row of the README's audio table: the validation trials that
# chose configs/fsdd-byol.toml (view length, epochs and batch size, BYOL-A's mixing, frequency
# scaling in its random resize crop), each a full pretraining run scored on FSDD's validation split (the
# digit: kNN and linear probe), then the chosen recipe's test split, reported once.
#
#   scripts/audio-tables.sh [OUT]        # default: runs/audio-tables
#
# About 75 minutes on 2 cores. Re-running skips trials already evaluated.
# Data: ../shared/data/audio/fsdd/recordings (the Free Spoken Digit Dataset's WAV files).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-runs/audio-tables}
bin=${SELFSUP:-target/release/selfsup}
[[ -x $bin ]] || cargo build --release -p selfsup-cli
base=configs/fsdd-byol.toml
fsdd=$(cd ../shared/data/audio/fsdd/recordings 2>/dev/null && pwd) || {
    echo "audio-tables: ../shared/data/audio/fsdd/recordings is missing" >&2
    exit 1
}
mkdir -p "$out"

mix='s/^random_crop = true$/random_crop = true\nmix = { p = 1.0, alpha = 0.4 }/'
freq='s/freq_scale = \[1.0, 1.0\]/freq_scale = [0.6, 1.5]/'
e60='s/^epochs = 100$/epochs = 60/; s/^batch_size = 32$/batch_size = 128/'
short='s/^frames = 48$/frames = 80/; s/^epochs = 100$/epochs = 20/; s/^batch_size = 32$/batch_size = 128/'
declare -A trials=(
    [f80-e20-mix-freq]="$short; $mix; $freq"
    [f48-e60-mix-freq]="$e60; $mix; $freq"
    [f48-e60-mix]="$e60; $mix"
    [f48-e60-freq]="$e60; $freq"
    [f48-e60]="$e60"
    [f48-e100-b64]='s/^batch_size = 32$/batch_size = 64/'
    [f48-e100-b32]=""
)
for t in f80-e20-mix-freq f48-e60-mix-freq f48-e60-mix f48-e60-freq f48-e60 f48-e100-b64 f48-e100-b32; do
    dir=$out/$t
    if [[ ! -f $dir/eval-audio.json ]]; then
        sed -e "s|^spec = \"audio:.*\"|spec = \"audio:$fsdd\"|" -e "${trials[$t]:-s/^//}" "$base" >"$dir.toml"
        "$bin" pretrain -c "$dir.toml" --out "$dir" -q >/dev/null
    fi
    python3 - "$dir/eval-audio.json" "$t" <<'PY'
import json, sys
d = next(f for f in json.load(open(sys.argv[1])) if f["label"] == "digit")["rows"][0]["val"]
lin = dict((f, a) for f, a in d["linear"])[1.0]
print(f"{sys.argv[2]}: validation digit kNN {d['knn']['top1']:.1f} / linear {lin:.1f}")
PY
done
echo "the chosen recipe (f48-e100-b32 = configs/fsdd-byol.toml), test split:"
sed -n '/^digit/,/^speaker/p' "$out/f48-e100-b32/eval-audio.md"
