#!/usr/bin/env python3
"""Loss agreement between Burn (selfsup) and the PyTorch re-implementation.

    python check.py DIR            # checks DIR/step-{a,b,c,vit,gpt,mlm}.safetensors (those present)
    python check.py --make-fake DIR  # writes Burn-style files from torch (tests this script)

Each file (written by `selfsup bench --check-dir DIR`) holds the model's weights under Burn
module paths (BatchNorm/LayerNorm gamma/beta, BatchNorm running_mean/running_var, Linear weight
stored [in, out]), `__input__` and `__loss__` (Burn's train-mode loss), optionally `__flops__`
(Burn side's FLOP count of one step, forward + backward).

- step-a/b/c (SimCLR): `__input__` is the 2N views, view 1 of every image first; NT-Xent loss.
- step-vit (MAE): `__input__` (N, 3, 32, 32), `__ids_keep__` (N, K) and `__ids_restore__` (N, L)
  (integers stored as float32): the masks of Burn's step; masked norm-pix MSE loss.
- step-gpt: `__input__` (N, L + 1) token ids (as float32): windows; next-token cross-entropy.
- step-mlm: `__input__` (N, L) ids, `__mlm_input__` (N, L) the encoder's input after Burn's
  80/10/10 masking and `__mlm_targets__` (N, L) the original id at a selected position, -1
  elsewhere; cross-entropy on the selected positions.

The torch model is loaded strictly (every torch parameter and buffer set except BatchNorm's
num_batches_tracked, every file tensor used), run in train mode on `__input__`, and its loss
compared with `__loss__`. Exit status 1 when a relative difference exceeds 1e-4 or a file
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
VARIANTS = {models.ResNet: "ResNet", models.ConvNet: "ConvNet", models.Vit: "Vit",
            models.TextTransformer: "Text"}
# Top-level field names of the models (a first path segment that is none of them is the root
# module's name, e.g. `Simclr.` or `Mae.`).
FIELDS = ("encoder", "head", "decoder_embed", "mask_token", "decoder_blocks", "decoder_norm",
          "decoder_pred", "dense", "norm", "decoder")
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
        if root not in FIELDS:
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


def flops_of(model, loss_fn):
    """FlopCounterMode of forward + backward. Attention (MAE) runs as explicit matmuls here so
    that its two products are counted whatever SDPA kernel the CPU build would pick."""
    models.set_sdpa(model, False)
    with FlopCounterMode(display=False) as fc:
        loss_fn(model).backward()
    model.zero_grad(set_to_none=True)
    models.set_sdpa(model, True)
    return float(fc.get_total_flops())


def token_ids(arr):
    """Token ids stored as float32 -> int64, checked to be integers."""
    a = np.asarray(arr)
    if not np.all(a == np.round(a)):
        raise ValueError("token ids are not integers")
    return torch.from_numpy(np.rint(a).astype(np.int64))


def mae_masks(tensors, n, num, keep):
    """`__ids_keep__` / `__ids_restore__` (float32 integers) -> int64, checked: each row of
    ids_restore a permutation of 0..L whose first K positions are ids_keep's patches."""
    ik = np.asarray(tensors["__ids_keep__"])
    ir = np.asarray(tensors["__ids_restore__"])
    if ik.shape != (n, keep) or ir.shape != (n, num):
        raise ValueError(f"mask shapes {ik.shape}, {ir.shape}; want {(n, keep)}, {(n, num)}")
    if not (np.all(ik == np.round(ik)) and np.all(ir == np.round(ir))):
        raise ValueError("mask ids are not integers")
    ik = torch.from_numpy(np.rint(ik).astype(np.int64))
    ir = torch.from_numpy(np.rint(ir).astype(np.int64))
    if not torch.equal(ir.sort(1).values, torch.arange(num).expand(n, num)):
        raise ValueError("a row of __ids_restore__ is not a permutation")
    shuffle = torch.argsort(ir, 1)          # the shuffled order
    if not torch.equal(shuffle[:, :keep], ik):
        raise ValueError("__ids_keep__ is not the first K of the order __ids_restore__ inverts")
    return ik, ir


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
    is_mae = isinstance(model, models.Mae)
    is_text = isinstance(model, (models.Gpt, models.Mlm))
    if is_text:
        x = token_ids(tensors["__input__"])
    if isinstance(model, models.Mlm):
        for need in ("__mlm_input__", "__mlm_targets__"):
            if need not in tensors:
                print(f"{id_}: FAIL, {need} missing from {path}")
                return False
        masking = (token_ids(tensors["__mlm_input__"]), token_ids(tensors["__mlm_targets__"]))

        def loss_of(m, inp):
            return m.loss_given(*masking)
    elif is_mae:
        for need in ("__ids_keep__", "__ids_restore__"):
            if need not in tensors:
                print(f"{id_}: FAIL, {need} missing from {path}")
                return False
        ids = mae_masks(tensors, x.shape[0], model.encoder.num_patches, model.keep)

        def loss_of(m, inp):
            return m.loss(inp, *ids)
    else:
        def loss_of(m, inp):
            return m.loss(inp)
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
        loss32 = float(loss_of(model, x))
    ok = True
    rel = abs(loss32 - burn_loss) / max(abs(loss32), 1e-12)
    print(f"{id_}: input {tuple(x.shape)}, {len(mapping)} tensors loaded"
          + (f" (root prefix '{root}.')" if root else "")
          + (f" ({len(ignored)} flag entries ignored)" if ignored else ""))
    print(f"  loss burn {burn_loss:.7f}  torch f32 {loss32:.7f}  rel diff {rel:.2e}"
          f"  {'ok' if rel <= TOL else 'FAIL (> %.0e)' % TOL}")
    ok &= rel <= TOL
    if is_mae or is_text:   # the same in f32 with explicit attention matmuls instead of SDPA
        models.set_sdpa(model, False)
        with torch.no_grad():
            loss_mm = float(loss_of(model, x))
        models.set_sdpa(model, True)
        rel_mm = abs(loss_mm - burn_loss) / max(abs(loss_mm), 1e-12)
        print(f"  loss torch f32 explicit attention {loss_mm:.7f}  rel diff {rel_mm:.2e}"
              f"  {'ok' if rel_mm <= TOL else 'FAIL (> %.0e)' % TOL}")
        ok &= rel_mm <= TOL
    with torch.no_grad():
        loss64 = float(loss_of(m64.train(), x if is_text else x.double()))
    rel64 = abs(loss64 - burn_loss) / max(abs(loss64), 1e-12)
    print(f"  loss torch f64 {loss64:.9f}  rel diff burn vs f64 {rel64:.2e}, "
          f"torch f32 vs f64 {abs(loss32 - loss64) / abs(loss64):.2e}")
    fl = flops_of(model, lambda m: loss_of(m, x))
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
        is_mae = isinstance(model, models.Mae)
        is_text = isinstance(model, (models.Gpt, models.Mlm))
        if is_text:
            w = cfg["seq"] + (1 if cfg["kind"] == "gpt" else 0)
            x = torch.randint(5, cfg["vocab"], (n, w))
        else:
            x = torch.randn(n if is_mae else 2 * n, cfg["channels"], cfg["side"], cfg["side"])
        root = {"mae": "Mae.", "gpt": "Gpt.", "mlm": "Mlm."}.get(cfg["kind"], "Simclr.")
        out = {}
        for key, t in model.state_dict().items():
            name = candidates(model, key)
            if not name:
                continue
            if models.is_linear_weight(model, key):
                t = t.t()
            out[root + name[0]] = t.contiguous().numpy()
        model.train()
        if isinstance(model, models.Mlm):
            inp, targets = model.masking(x)
            out["__mlm_input__"] = inp.float().numpy()
            out["__mlm_targets__"] = targets.float().numpy()
            with torch.no_grad():
                out["__loss__"] = np.array([float(model.loss_given(inp, targets))],
                                           dtype=np.float32)
        elif is_mae:
            ik, ir = model.masks(n)
            out["__ids_keep__"] = ik.float().numpy()
            out["__ids_restore__"] = ir.float().numpy()
            with torch.no_grad():
                out["__loss__"] = np.array([float(model.loss(x, ik, ir))], dtype=np.float32)
        else:
            with torch.no_grad():
                out["__loss__"] = np.array([float(model.loss(x))], dtype=np.float32)
        out["__input__"] = x.float().numpy()
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
        print(f"no {'/'.join(models.CONFIGS)} .safetensors in {d}")
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
