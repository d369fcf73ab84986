#!/usr/bin/env python3
"""Loss agreement between Burn (selfsup) and the PyTorch re-implementation.

    python check.py DIR            # checks DIR/step-a.safetensors, step-b, step-c (those present)
    python check.py --make-fake DIR  # writes Burn-style files from torch (tests this script)

Each file (written by `selfsup bench --check-dir DIR`) holds the SimCLR model's weights under
Burn module paths (BatchNorm gamma/beta/running_mean/running_var, Linear weight stored [in, out]),
`__input__` (the 2N views, view 1 of every image first) and `__loss__` (Burn's train-mode loss),
optionally `__flops__` (Burn side's FLOP count of one step, forward + backward).

The torch model is loaded strictly (every torch parameter and buffer set except BatchNorm's
num_batches_tracked, every file tensor used), run in train mode on `__input__`, and its NT-Xent
loss compared with `__loss__`. Exit status 1 when a relative difference exceeds 1e-4 or a file
does not load.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

import models

TOL = 1e-4
VARIANTS = {models.ResNet: "ResNet", models.ConvNet: "ConvNet"}
# Burn-only entries that carry no tensor the torch model needs (e.g. a BatchNorm training flag).
IGNORABLE_SUFFIXES = (".training",)


def candidates(model, key):
    """Burn paths a torch state_dict key may have in the file, most likely first."""
    base = models.burn_name(model, key)
    if base is None:
        return []
    out = [base]
    if base.startswith("encoder."):
        variant = VARIANTS.get(type(model.encoder))
        if variant:
            out.insert(0, "encoder." + variant + base[len("encoder"):])
    return out


def strip_root(tensors):
    """Burn's store may prefix every path with the root module's name (`Simclr.`): drop a first
    segment that all weight entries share when it is not one of the model's own fields."""
    keys = [k for k in tensors if not k.startswith("__")]
    heads = {k.split(".", 1)[0] for k in keys}
    if len(heads) == 1 and all("." in k for k in keys):
        root = heads.pop()
        if root not in ("encoder", "head"):
            return {(k.split(".", 1)[1] if not k.startswith("__") else k): v
                    for k, v in tensors.items()}, root
    return tensors, None


def load_into(model, tensors):
    """Sets every torch parameter/buffer from `tensors` (Burn names, root prefix stripped).
    Returns (missing torch keys, unused file keys, mapping)."""
    sd = model.state_dict()
    used, missing, mapping = set(), [], {}
    new_sd = {}
    for key, ref in sd.items():
        cands = candidates(model, key)
        if not cands:   # num_batches_tracked: torch-only, irrelevant with a fixed momentum
            new_sd[key] = ref
            continue
        name = next((c for c in cands if c in tensors), None)
        if name is None:
            missing.append(f"{key} (looked for {' or '.join(cands)})")
            continue
        arr = tensors[name]
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(ref.dtype)
        if models.is_linear_weight(model, key):
            t = t.t().contiguous()   # Burn Linear weight is [in, out]
        if tuple(t.shape) != tuple(ref.shape):
            missing.append(f"{key}: file {name} has shape {tuple(arr.shape)}, "
                           f"torch wants {tuple(ref.shape)}")
            continue
        new_sd[key] = t
        used.add(name)
        mapping[key] = name
    unused = [k for k in tensors if not k.startswith("__") and k not in used
              and not k.endswith(IGNORABLE_SUFFIXES)]
    if not missing:
        model.load_state_dict(new_sd, strict=True)
    return missing, unused, mapping


def flops_of(model, x):
    with FlopCounterMode(display=False) as fc:
        model.loss(x).backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def check_file(path, verbose):
    id_ = path.stem
    if id_ not in models.CONFIGS:
        print(f"{path.name}: unknown id {id_!r}, skipped")
        return True
    tensors, root = strip_root(load_file(str(path)))
    for need in ("__input__", "__loss__"):
        if need not in tensors:
            print(f"{id_}: FAIL, {need} missing from {path}")
            return False
    x = torch.from_numpy(np.ascontiguousarray(tensors["__input__"])).float()
    burn_loss = float(np.asarray(tensors["__loss__"]).reshape(-1)[0])
    torch.manual_seed(0)
    model = models.build(id_)
    missing, unused, mapping = load_into(model, tensors)
    ignored = [k for k in tensors if k.endswith(IGNORABLE_SUFFIXES)]
    if verbose:
        for k, v in mapping.items():
            print(f"  {k:<45} <- {v}")
    if missing or unused:
        print(f"{id_}: FAIL, the file does not match the torch model")
        for m in missing:
            print(f"  missing: {m}")
        for u in unused:
            print(f"  unused file tensor: {u} {tuple(tensors[u].shape)}")
        return False
    m64 = models.build(id_).double()
    m64.load_state_dict(model.state_dict())
    model.train()
    with torch.no_grad():
        loss32 = float(model.loss(x))
    ok = True
    rel = abs(loss32 - burn_loss) / max(abs(loss32), 1e-12)
    print(f"{id_}: input {tuple(x.shape)}, {len(mapping)} tensors loaded"
          + (f" (root prefix '{root}.')" if root else "")
          + (f" ({len(ignored)} flag entries ignored)" if ignored else ""))
    print(f"  loss burn {burn_loss:.7f}  torch f32 {loss32:.7f}  rel diff {rel:.2e}"
          f"  {'ok' if rel <= TOL else 'FAIL (> %.0e)' % TOL}")
    ok &= rel <= TOL
    with torch.no_grad():
        loss64 = float(m64.train().loss(x.double()))
    rel64 = abs(loss64 - burn_loss) / max(abs(loss64), 1e-12)
    print(f"  loss torch f64 {loss64:.9f}  rel diff burn vs f64 {rel64:.2e}, "
          f"torch f32 vs f64 {abs(loss32 - loss64) / abs(loss64):.2e}")
    fl = flops_of(model, x)
    if "__flops__" in tensors:
        bf = float(np.asarray(tensors["__flops__"]).reshape(-1)[0])
        print(f"  flops (forward+backward) burn {bf:.4e}  torch FlopCounterMode {fl:.4e}  "
              f"ratio burn/torch {bf / fl:.4f}")
    else:
        print(f"  flops (forward+backward) torch FlopCounterMode {fl:.4e} (no __flops__ in file)")
    return ok


def make_fake(out_dir):
    """Writes Burn-style files from torch models (variant segment, gamma/beta, [in, out] Linear)
    so that this script can be tested without the Rust side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for id_, cfg in models.CONFIGS.items():
        torch.manual_seed(1)
        model = models.build(id_)
        for m in model.modules():   # non-trivial BN affine parameters
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.uniform_(m.bias, -0.2, 0.2)
        n = 4
        x = torch.randn(2 * n, cfg["channels"], cfg["side"], cfg["side"])
        out = {}
        for key, t in model.state_dict().items():
            name = candidates(model, key)
            if not name:
                continue
            if models.is_linear_weight(model, key):
                t = t.t()
            out["Simclr." + name[0]] = t.contiguous().numpy()
        model.train()
        with torch.no_grad():
            out["__loss__"] = np.array([float(model.loss(x))], dtype=np.float32)
        out["__input__"] = x.numpy()
        save_file(out, str(out_dir / f"{id_}.safetensors"))
        print(f"wrote {out_dir / (id_ + '.safetensors')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--make-fake", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the name mapping")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = Path(args.dir)
    if args.make_fake:
        make_fake(d)
        return 0
    files = [d / f"{i}.safetensors" for i in models.CONFIGS if (d / f"{i}.safetensors").exists()]
    if not files:
        print(f"no step-a/b/c .safetensors in {d}")
        return 1
    ok = True
    for f in files:
        try:
            ok &= check_file(f, args.verbose)
        except Exception as e:  # a malformed file is a failure, not a crash
            print(f"{f.stem}: FAIL, {type(e).__name__}: {e}")
            ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
