#!/usr/bin/env bash
# Soak test of resume: a run is killed with SIGKILL N times (20 by default) at random moments,
# half of them while a checkpoint is being written, and resumed each time; it must end
# bit-identical to an uninterrupted run of the same seed (every encoder tensor, the optimiser
# and train state of the last checkpoint, every logged epoch's step, loss and learning rate). Then
# `selfsup eval` and `selfsup embed` are killed at random moments: no half-written file may
# be left under a final name.
#
#   scripts/soak-resume.sh [N] [OUT]        # default: 20 kills, runs/soak
#
# The run is MoCo v2 (a queue and an EMA key encoder: the most state to restore) on 600
# built-in digits, EPOCHS epochs (300 by default: ~50 s uninterrupted on 2 cores). Kills
# land 0.2–2.5 s after a start (startup included); the ones "in a checkpoint" wait for a
# `.epoch-*.tmp` folder, opened for 300 ms by SELFSUP_FAULT_SAVE_PAUSE_MS. Exit status 1 on
# any difference, with what differed. Needs python3 (the comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-20}
out=${2:-runs/soak}
epochs=${EPOCHS:-300}

cargo build --release -p selfsup-cli
bin=$PWD/target/release/selfsup
rm -rf "$out"
mkdir -p "$out"
recipe="$out/soak.toml"
cat >"$recipe" <<EOF
[data]
spec = "digits"
limit = 600
[model]
backbone = "convnet"
widths = [16, 32, 64]
[method]
name = "moco-v2"
queue_size = 256
temperature = 0.2
[train]
epochs = $epochs
batch_size = 64
seed = 11
[optim]
kind = "sgd"
lr = 0.1
warmup_epochs = 2.0
momentum = 0.9
weight_decay = 5e-4
EOF

t0=$(date +%s)
"$bin" pretrain -q --no-eval --config "$recipe" --out "$out/straight"
echo "uninterrupted run: $(($(date +%s) - t0)) s" >&2

cut="$out/cut"
kills=0
in_ckpt=0
log="$out/kills.log"
: >"$log"
while ((kills < n)); do
    if [[ -f "$cut/recipe.toml" ]]; then
        args=(--resume "$cut")
    else
        args=(--config "$recipe" --out "$cut")
    fi
    during_save=$((kills % 2))
    if ((during_save)); then
        export SELFSUP_FAULT_SAVE_PAUSE_MS=300
    else
        unset SELFSUP_FAULT_SAVE_PAUSE_MS
    fi
    "$bin" pretrain -q --no-eval "${args[@]}" 2>>"$out/stderr.log" &
    pid=$!
    if ((during_save)); then
        # kill while a checkpoint folder is being written (after a random delay, so that
        # it is not always the first checkpoint of the process)
        sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 1.5), 2))')"
        until compgen -G "$cut/checkpoints/.epoch-*.tmp" >/dev/null || ! kill -0 "$pid" 2>/dev/null; do
            sleep 0.01
        done
    else
        sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 2.5), 2))')"
    fi
    where=$(ls "$cut/checkpoints" 2>/dev/null | tr '\n' ' ' || true)
    if kill -9 "$pid" 2>/dev/null; then
        kills=$((kills + 1))
        tmp=$(compgen -G "$cut/checkpoints/.epoch-*.tmp" >/dev/null && echo yes || echo no)
        [[ $tmp == yes ]] && in_ckpt=$((in_ckpt + 1))
        echo "kill $kills: during a checkpoint write: $tmp; checkpoints: $where" >>"$log"
    fi
    wait "$pid" 2>/dev/null || true
    if grep -q '"epoch":'"$epochs"',' "$cut/metrics.jsonl" 2>/dev/null && [[ -f "$cut/encoder.safetensors" ]]; then
        echo "the run finished after $kills kills: raise EPOCHS for $n kills" >&2
        exit 1
    fi
done
unset SELFSUP_FAULT_SAVE_PAUSE_MS
"$bin" pretrain -q --no-eval --resume "$cut" 2>>"$out/stderr.log"
echo "$kills kills ($in_ckpt while a checkpoint was being written), then resumed to the end" >&2

# kill `eval` and `embed` at random moments: nothing half-written under a final name
for i in 1 2 3 4 5 6; do
    "$bin" eval knn --run "$cut" >/dev/null 2>&1 &
    pid=$!
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.05, 1.5), 2))')"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "$bin" embed --run "$cut" --out "$out/emb-$i.npy" >/dev/null 2>&1 &
    pid=$!
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.05, 1.0), 2))')"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done

python3 - "$out" <<'EOF'
import ast, glob, json, struct, sys
out = sys.argv[1]
fail = []

def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    body = b[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in head.items() if k != "__metadata__"}

a, c = (tensors(f"{out}/{r}/encoder.safetensors") for r in ("straight", "cut"))
if a != c:
    diff = sorted(k for k in set(a) | set(c) if a.get(k) != c.get(k))
    fail.append(f"encoder tensors differ: {diff[:5]}")

# the last checkpoint: the optimiser state and train state byte for byte (model.bpk's header
# lists its tensors in an order that varies between processes; its weights are compared
# through the encoder above)
def last_ckpt(run):
    name = open(f"{out}/{run}/checkpoints/latest").read().strip()
    d = f"{out}/{run}/checkpoints/{name}"
    return name, open(f"{d}/optim.safetensors", "rb").read(), open(f"{d}/state.json").read()

(na, oa, sa), (nc, oc, sc) = last_ckpt("straight"), last_ckpt("cut")
if (na, oa, sa) != (nc, oc, sc):
    fail.append(f"last checkpoint differs: {na} vs {nc}, optimiser state same: {oa == oc}, "
                f"train state same: {sa == sc}")

def metrics(run):
    keep = ("epoch", "step", "loss", "lr")
    return [tuple(json.loads(l).get(k) for k in keep)
            for l in open(f"{out}/{run}/metrics.jsonl") if l.strip()]

ma, mc = metrics("straight"), metrics("cut")
if ma != mc:
    bad = [i for i, (x, y) in enumerate(zip(ma, mc)) if x != y]
    fail.append(f"metrics differ: {len(ma)} vs {len(mc)} lines, first difference at {bad[:1]}")

# every file under a final name is whole
for p in glob.glob(f"{out}/cut/eval-knn*.json"):
    try:
        json.load(open(p))
    except Exception as e:
        fail.append(f"{p}: not whole ({e})")
for p in glob.glob(f"{out}/cut/eval-knn*.md"):
    if "|" not in open(p).read():
        fail.append(f"{p}: not whole")
for p in glob.glob(f"{out}/emb-*.npy"):
    b = open(p, "rb").read()
    if not b.startswith(b"\x93NUMPY"):
        fail.append(f"{p}: not an npy file")
        continue
    hl = struct.unpack("<H", b[8:10])[0]
    head = ast.literal_eval(b[10:10 + hl].decode())
    rows, cols = head["shape"]
    if len(b) != 10 + hl + 4 * rows * cols:
        fail.append(f"{p}: {len(b)} bytes, its header says {10 + hl + 4 * rows * cols}")
left = [p for p in glob.glob(f"{out}/**/.*tmp*", recursive=True)]
print(f"eval files: {len(glob.glob(f'{out}/cut/eval-knn*.json'))} whole; embeddings: "
      f"{len(glob.glob(f'{out}/emb-*.npy'))} whole; temporary files left by the kills: {len(left)} "
      f"(removed on the next write or resume)")
if fail:
    print("SOAK FAILED:\n  " + "\n  ".join(fail))
    sys.exit(1)
print(f"soak passed: {len(ma)} epochs bit-identical to the uninterrupted run "
      f"(encoder, optimiser state, metrics)")
EOF
