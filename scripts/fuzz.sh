#!/usr/bin/env bash
# Fuzzes every reader of untrusted input for SECONDS each (60 by default): IDX, CSV, image
# files (the image-folder decoder), text and TSV corpora, TOML recipes, TU graph sets, WAV
# recordings and image-text pairs files (fuzz/fuzz_targets/).
# Each starts from the seed corpus in fuzz/corpus/<target> (copied: new inputs go to
# runs/fuzz/<target>, the seeds stay as committed). A crash, panic, timeout (> 10 s per input)
# or allocation above 2 GB stops the target and leaves the input in fuzz/artifacts/<target>/;
# the script then exits with status 1 and says which.
#
#   scripts/fuzz.sh [SECONDS] [TARGETS...]      # default: 60 s, all targets
#
# Needs cargo-fuzz (installed from crates.io if missing) and, on a stable toolchain,
# RUSTC_BOOTSTRAP=1 (set here) for the sanitizer flags. FUZZ_SANITIZER=none skips
# AddressSanitizer (faster; panics, hangs and allocations are still caught).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(idx csv image text recipe tu wav pairs)
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p runs/fuzz
summary=runs/fuzz/summary.md
echo "| target | seconds | executions | exec/s | corpus (seeds → now) | result |" >"$summary"
echo "|---|---|---|---|---|---|" >>"$summary"
failed=()
for t in "${targets[@]}"; do
    work=runs/fuzz/$t
    rm -rf "$work"
    mkdir -p "$work"
    cp fuzz/corpus/"$t"/* "$work"/
    seeds=$(ls "$work" | wc -l)
    log=runs/fuzz/$t.log
    echo "== $t: $secs s" >&2
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    now=$(ls "$work" | wc -l)
    if [[ $status -eq 0 ]]; then
        result=ok
    else
        result="FAILED (status $status, see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
        tail -30 "$log" >&2
    fi
    echo "| $t | $secs | $execs | $rate | $seeds → $now | $result |" >>"$summary"
done
cat "$summary"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing found failures in: ${failed[*]}" >&2
    exit 1
fi
