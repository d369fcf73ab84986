#!/usr/bin/env python3
"""PyTorch *quality* reference: trains a self-supervised encoder with PyTorch following one of
selfsup's TOML recipes, then evaluates the frozen encoder with selfsup's protocol, so that the
README's "PyTorch reference" rows come from a command in the repository.

    .venv/bin/python quality.py --config configs/fashion-mnist-simclr.toml \\
        [--data DIR] [--epochs N] [--time-budget 60m] [--threads 2] [--json out.json] [--quick]

Mirrored from the Rust sources (crates/...):

- data (selfsup-data/src/source): `[data] spec = "idx:DIR"` (train-/t10k- images and labels,
  `-idx3-ubyte` or `.idx3-ubyte` spelling, gzip recognised by its magic bytes); `data.limit` as
  `limited_sizes`; the validation split as `carve_validation` (class-stratified,
  `round(n_class * val_fraction)` per class, SplitMix64 seeded by `(split_seed or train.seed,
  0xFA11DA)`, so the same images as selfsup's); normalisation with the per-channel mean and std
  of the (carved) training images, std at least 1/255 (`channel_mean_std`).
- augmentation (selfsup-data/src/augment): `[augment]` if present, else
  `AugmentConfig::for_dataset(name, C, H)`; operations in the Rust order crop -> flip ->
  rotation -> colour jitter -> grayscale -> blur -> solarize -> cutout, each with its
  probability, in float on [0, 1] (as ours, in f32) and quantised to 8 bits once at the end
  (`quantize`), then `(x - mean) / std`. torchvision.transforms.v2 for crop
  (`RandomResizedCrop`: same sampling of scale, log-ratio and position, 10 tries then a centre
  crop; bilinear with half-pixel centres and antialias off, so that the borders clamp the
  coordinate as ours do), flip, rotation (bilinear, zero fill),
  `ColorJitter` (random order of the four, saturation and hue dropped for grey images as ours),
  `RandomGrayscale`, `RandomSolarize` (threshold / 255, `>=`); blur (sigma uniform, kernel radius
  `min(ceil(3 sigma), (min(H, W) - 1) / 2)`, reflect padding) and cutout (square of side
  `round(U(size) * min(H, W))` centred at a random pixel, clipped, filled with 0 or the mean)
  are written here as ours are. For Fashion-MNIST (no `[augment]`, name "fashion-mnist", 1x28x28):
  RandomResizedCrop(28, scale (0.2, 1), ratio (3/4, 4/3)); flip p 0.5; ColorJitter(brightness
  0.4, contrast 0.4) with p 0.8; nothing else.
- model (models.py, imported): `[model] backbone = "resnet"` (depth, cifar_stem, width) or
  `"convnet"` (widths); `[method] name = "simclr"` (temperature, proj_hidden_dim, proj_dim,
  proj_layers), NT-Xent over the 2N views.
- training (selfsup/src/train.rs, optim/): `steps_per_epoch = floor(n / batch)` (the incomplete
  last batch is dropped), batches in the order of `epoch_order(n, seed, epoch)` (the same images
  per batch as selfsup); lr = `WarmupCosine(lr, final_lr, round(warmup_epochs * steps_per_epoch),
  epochs * steps_per_epoch)` per step, not scaled by the batch size; `[optim] kind` sgd (PyTorch
  SGD semantics), adamw (decoupled decay) or lars (trust ratio eta ||w|| / ||g + wd w||, then
  momentum), no weight decay (and no LARS adaptation) on 1-D parameters when
  `exclude_bias_norm` (default), optional `clip_grad_norm`.
- evaluation (selfsup/src/eval): features = the encoder's globally pooled output (no projection
  head), BatchNorm in inference mode, un-augmented normalised images, in batches of
  `train.eval_batch_size`; the training split's features are the kNN bank and the probe's
  training set; weighted kNN (`bench.knn_classify`, as knn.rs: cosine, k, T, weights exp(s/T));
  linear probe as linear.rs (standardised with the training mean/std in float64, std < 1e-6 -> 1,
  zero-initialised Linear, cross-entropy, Adam (or SGD/AdamW per `eval.linear.optimizer`),
  cosine per step to 0 without warm-up, `max(epochs, ceil(min_steps / steps_per_epoch))` epochs,
  batches in `epoch_order(n, seed, epoch)` order with the last partial batch kept); label
  fractions via `stratified_subset` (same subset as selfsup). Validation and test are scored by
  the same kNN bank and the same trained classifier. Baselines: cosine kNN on raw (x/255) and
  standardised pixels (`--baselines pixels`, the default); `--baselines all` adds the linear
  probe on both and a random-init encoder row.

`--time-budget` (equal wall time, counted from the start of the script): 2 + 4 training steps
are run and timed (the first two, slower, not counted), then thrown away (weights, BatchNorm
statistics, optimiser state and torch RNG restored, so the run is the one `--epochs N` gives);
the final evaluation is estimated from short timings (one feature batch, one kNN chunk per
feature width, a few probe steps, + 10 %); `plan_epochs` picks the largest whole number of
epochs that fits (5 % margin, as selfsup's `budget::MARGIN`; `--epochs` caps it), and
warm-up + cosine run over those epochs.
Before each further epoch the last epoch's step time is checked (and the evaluation estimate
scaled by the slowdown since calibration, if any): an epoch that would no longer fit is not
started, and "planned" and "run" differ (the cosine then stops short of its end).
"""

import argparse
import copy
import datetime
import gzip
import json
import math
import os
import random
import re
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from bench import cpu_model, knn_classify  # noqa: E402

# ---------------------------------------------------------------------------------------------
# SplitMix64 (selfsup-data/src/rng.rs), for the splits, subsets and batch orders

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def hash_seed(parts):
    h = mix64(0x5EED0F5E1F5EED00 ^ len(parts))
    for i, p in enumerate(parts):
        h = mix64(h ^ mix64((p + GOLDEN * (i + 1)) & M64))
    return h


def _mix64_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next_u64(self):
        self.state = (self.state + GOLDEN) & M64
        return mix64(self.state)

    def shuffle(self, v):
        """Fisher-Yates in place (`v`: a list), j = below(i + 1) for i = n-1 .. 1: the draws are
        computed vectorised (counter-based generator), the swaps in a loop."""
        n = len(v)
        if n < 2:
            return v
        k = np.arange(1, n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            u = _mix64_np(np.uint64(self.state) + k * np.uint64(GOLDEN))
            m = np.arange(n, 1, -1, dtype=np.uint64)            # i + 1 for i = n-1 .. 1
            hi, lo = u >> np.uint64(32), u & np.uint64(0xFFFFFFFF)
            j = (hi * m + ((lo * m) >> np.uint64(32))) >> np.uint64(32)   # (u * m) >> 64
        self.state = (self.state + (n - 1) * GOLDEN) & M64
        for i, jj in zip(range(n - 1, 0, -1), j.tolist()):
            v[i], v[jj] = v[jj], v[i]
        return v


def epoch_order(n, seed, epoch):
    """loader.rs `epoch_order`."""
    return SplitMix64(hash_seed([seed, epoch, 0xE90C])).shuffle(list(range(n)))


def round_half_away(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def stratified_subset(labels, fraction, seed):
    """eval/linear.rs `stratified_subset`: `fraction` of each class (at least one), sorted."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    classes = int(labels.max()) + 1 if len(labels) else 0
    out = []
    for c in range(classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue
        order = epoch_order(len(idx), (seed ^ 0x5EED1AB5) & M64, c)
        idx = idx[order]
        keep = max(1, round_half_away(len(idx) * fraction))
        out.extend(idx[:keep].tolist())
    return np.array(sorted(out), dtype=np.int64)


def carve_validation(labels, val_fraction, seed):
    """source/mod.rs `carve_validation` / `split_indices_from`: (train, val) index lists."""
    frac = min(max(float(np.float32(val_fraction)), 0.0), 1.0)
    n = len(labels)
    if frac <= 0.0 or n == 0:
        return list(range(n)), []
    rng = SplitMix64(hash_seed([seed, 0x00FA11DA]))
    train, val = [], []
    classes = int(labels.max()) + 1
    for c in range(classes):
        g = np.flatnonzero(labels == c).tolist()
        rng.shuffle(g)
        k = min(round_half_away(len(g) * frac), len(g))
        val.extend(g[:k])
        train.extend(g[k:])
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def limited_sizes(ntrain, ntest, limit):
    """source/mod.rs `limited_sizes`."""
    if limit is None or limit >= ntrain:
        return ntrain, ntest
    t = ntest if ntrain == 0 else -(-limit * ntest // ntrain)
    t = max(t, 1) if ntest > 0 else 0
    return limit, min(t, ntest)


# ---------------------------------------------------------------------------------------------
# recipe

KNOWN = {
    "data": {"spec", "test_fraction", "val_fraction", "limit", "split_seed", "image_size",
             "channels"},
    "model": {"backbone", "depth", "cifar_stem", "width", "widths"},
    "method": {"name", "temperature", "proj_hidden_dim", "proj_dim", "proj_layers"},
    "train": {"epochs", "batch_size", "seed", "eval_batch_size", "time_budget"},
    "optim": {"kind", "lr", "final_lr", "warmup_epochs", "momentum", "weight_decay", "betas",
              "eps", "eta", "exclude_bias_norm", "clip_grad_norm"},
    "augment": {"crop", "flip", "color_jitter", "grayscale", "blur", "solarize", "rotation",
                "cutout"},
    "eval": {"knn", "linear", "baselines"},
    "eval.knn": {"k", "temperature", "chunk"},
    "eval.linear": {"epochs", "min_steps", "batch_size", "lr", "optimizer", "weight_decay",
                    "label_fractions"},
}
# keys of selfsup's recipe that change nothing here (monitoring, devices, the Rust loader's
# threads, text data): named in a note, not a warning
NO_EFFECT = {
    "data": {"skip_bad_images", "split_order", "text_column", "label_column", "skip_bad_lines",
             "stream", "seq_len"},
    "train": {"device", "knn_every", "prefetch", "collapse_std_ratio", "collapse_min_rank",
              "collapse_patience", "stop_on_collapse", "steps_per_epoch", "data_parallel",
              "online_probe"},
    "eval": {"finetune"},
    "": {"tokenizer"},
}
AUGMENT_DEFAULTS = {
    "crop": {"p": 1.0, "scale": [0.08, 1.0], "ratio": [0.75, 4.0 / 3.0]},
    "flip": {"p": 0.5},
    "color_jitter": {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "grayscale": {"p": 0.2},
    "blur": {"p": 0.5, "sigma": [0.1, 2.0]},
    "solarize": {"p": 0.2, "threshold": 128.0},
    "rotation": {"p": 0.5, "degrees": 10.0},
    "cutout": {"p": 0.5, "size": [0.1, 0.3], "fill": "mean"},
}
OPTIM_DEFAULTS = {"kind": "sgd", "lr": 0.06, "final_lr": 0.0, "warmup_epochs": 0.0,
                  "momentum": 0.9, "weight_decay": 5e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                  "eta": 0.001, "exclude_bias_norm": True, "clip_grad_norm": None}
LINEAR_DEFAULTS = {"epochs": 100, "min_steps": 3000, "batch_size": 256, "lr": 1e-3,
                   "optimizer": "adamw", "weight_decay": 0.0, "label_fractions": [0.01]}
KNN_DEFAULTS = {"k": 200, "temperature": 0.1, "chunk": 512}
TRAIN_DEFAULTS = {"epochs": 30, "batch_size": 256, "seed": 0, "eval_batch_size": 512}
SIMCLR_DEFAULTS = {"temperature": 0.5, "proj_hidden_dim": 512, "proj_dim": 128, "proj_layers": 2}


def check_keys(recipe):
    """Warnings for keys this script does not know (it would ignore them), notes for keys that
    have no effect here. Returns (warnings, notes)."""
    warnings, notes = [], []

    def visit(table, name):
        for k, v in table.items():
            full = f"{name}.{k}" if name else k
            if not name:
                if k in KNOWN:
                    if isinstance(v, dict):
                        visit(v, k)
                    continue
                (notes if k in NO_EFFECT[""] else warnings).append(full)
                continue
            if name == "augment" and k in AUGMENT_DEFAULTS and isinstance(v, dict):
                for kk in v:
                    if kk not in AUGMENT_DEFAULTS[k]:
                        warnings.append(f"{full}.{kk}")
                continue
            if name == "eval" and k in ("knn", "linear") and isinstance(v, dict):
                visit(v, full)
                continue
            if k in KNOWN.get(name, ()):
                continue
            (notes if k in NO_EFFECT.get(name, ()) else warnings).append(full)

    visit(recipe, "")
    return warnings, notes


def section(recipe, name, defaults):
    out = dict(defaults)
    out.update({k: v for k, v in recipe.get(name, {}).items() if k in defaults})
    return out


def dataset_name(spec_path):
    """`DataSpec::name` of an idx folder: the folder's name."""
    return Path(spec_path).resolve().name


def for_dataset(name, channels, height):
    """AugmentConfig::for_dataset, as a dict of the operations that are on."""
    lname = name.lower()
    digit_like = "digit" in lname or "svhn" in lname or ("mnist" in lname and "fashion" not in lname)
    grey = channels < 3
    cfg = {}
    jitter = ({"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.0, "hue": 0.0}
              if grey else dict(AUGMENT_DEFAULTS["color_jitter"]))
    rotation = {"p": 0.5, "degrees": 10.0}
    if height <= 12:
        cfg["crop"] = {"p": 1.0, "scale": [0.5, 1.0], "ratio": [0.8, 1.25]}
        cfg["rotation"] = rotation
    elif height <= 64:
        cfg["crop"] = {"p": 1.0, "scale": [0.2 if grey else 0.08, 1.0], "ratio": [0.75, 4.0 / 3.0]}
        if digit_like:
            cfg["rotation"] = rotation
    else:
        cfg["crop"] = dict(AUGMENT_DEFAULTS["crop"])
        cfg["blur"] = dict(AUGMENT_DEFAULTS["blur"])
        if digit_like:
            cfg["rotation"] = rotation
    if not digit_like:
        cfg["flip"] = {"p": 0.5}
    cfg["color_jitter"] = jitter
    if not grey:
        cfg["grayscale"] = {"p": 0.2}
    return cfg


def augment_config(recipe, name, c, h):
    if "augment" not in recipe:
        return for_dataset(name, c, h), "default for the data set"
    cfg = {}
    for op, v in recipe["augment"].items():
        if op in AUGMENT_DEFAULTS:
            d = dict(AUGMENT_DEFAULTS[op])
            d.update({k: x for k, x in (v if isinstance(v, dict) else {}).items() if k in d})
            cfg[op] = d
    return cfg, "[augment] of the recipe"


# ---------------------------------------------------------------------------------------------
# data

def read_idx_file(path):
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims))
    return np.frombuffer(raw, dtype=np.uint8, count=n, offset=4 + 4 * ndim).reshape(dims)


def find_idx(folder, split, kind):
    dims = 3 if kind == "images" else 1
    for base in (f"{split}-{kind}-idx{dims}-ubyte", f"{split}-{kind}.idx{dims}-ubyte"):
        for name in (base, base + ".gz"):     # the uncompressed file first, as idx.rs
            p = Path(folder) / name
            if p.is_file():
                return p
    raise SystemExit(f"{folder}: no {split} {kind} (looked for {split}-{kind}-idx{dims}-ubyte[.gz])")


def resolve_data_dir(spec, override):
    if override:
        spec = override if override.startswith("idx:") else "idx:" + override
    if not spec.startswith("idx:"):
        raise SystemExit(f"data.spec '{spec}': only idx:DIR is supported by the PyTorch reference")
    d = Path(spec[4:])
    if not d.is_absolute() and not d.exists() and (REPO / d).exists():
        d = REPO / d
    return d


def channel_mean_std(x):
    """source/mod.rs `channel_mean_std` of uint8 (N, C, H, W): per channel, std >= 1/255."""
    mean, std = [], []
    for ch in range(x.shape[1]):
        cnt = np.bincount(x[:, ch].reshape(-1), minlength=256).astype(np.float64)
        v = np.arange(256, dtype=np.float64)
        count = cnt.sum()
        m = (cnt * v).sum() / count
        var = max((cnt * v * v).sum() / count - m * m, 0.0)
        mean.append(float(np.float32(m / 255.0)))
        std.append(float(max(np.float32(math.sqrt(var) / 255.0), np.float32(1.0 / 255.0))))
    return mean, std


def load_data(data_dir, limit, val_fraction, split_seed, channels, image_size):
    xtr = read_idx_file(find_idx(data_dir, "train", "images"))
    ytr = read_idx_file(find_idx(data_dir, "train", "labels")).astype(np.int64)
    xte = read_idx_file(find_idx(data_dir, "t10k", "images"))
    yte = read_idx_file(find_idx(data_dir, "t10k", "labels")).astype(np.int64)
    ntr, nte = limited_sizes(len(xtr), len(xte), limit)
    # copies: np.frombuffer arrays are read-only
    xtr, ytr, xte, yte = (np.array(a[:m]) for a, m in ((xtr, ntr), (ytr, ntr), (xte, nte),
                                                        (yte, nte)))
    xtr, xte = xtr[:, None], xte[:, None]                  # (N, 1, H, W)
    if channels == 3:                                      # Image::to_channels(3): replicate
        xtr, xte = np.repeat(xtr, 3, 1), np.repeat(xte, 3, 1)
    if image_size is not None and tuple(xtr.shape[2:]) != (image_size, image_size):
        def rs(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).float()
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True)
            return (t + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        xtr, xte = rs(xtr), rs(xte)
    tr, va = carve_validation(ytr, val_fraction, split_seed)
    xva, yva = xtr[va], ytr[va]
    xtr, ytr = xtr[tr], ytr[tr]
    return {"train": (np.ascontiguousarray(xtr), ytr), "val": (np.ascontiguousarray(xva), yva),
            "test": (np.ascontiguousarray(xte), yte)}


# ---------------------------------------------------------------------------------------------
# augmentation

class Blur(nn.Module):
    """ops.rs `gaussian_blur`: sigma ~ U(lo, hi), radius min(ceil(3 sigma), (min(H,W)-1)/2)."""

    def __init__(self, sigma):
        super().__init__()
        self.lo, self.hi = sigma

    def forward(self, x):
        sigma = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        h, w = x.shape[-2:]
        r = min(math.ceil(3.0 * sigma), (min(h, w) - 1) // 2)
        if r == 0 or sigma <= 0:
            return x
        return TF.gaussian_blur(x, [2 * r + 1, 2 * r + 1], [sigma, sigma])


class Cutout(nn.Module):
    """pipeline.rs cutout: side round(U(size) min(H, W)) >= 1, centre a uniform pixel, clipped."""

    def __init__(self, size, fill_values):
        super().__init__()
        self.lo, self.hi = size
        self.fill = fill_values      # per channel, in [0, 1]

    def forward(self, x):
        h, w = x.shape[-2:]
        frac = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        side = max(1, round_half_away(frac * min(h, w)))
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, x0 = max(cy - side // 2, 0), max(cx - side // 2, 0)
        y1, x1 = min(y0 + side, h), min(x0 + side, w)
        x = x.clone()
        for ch in range(x.shape[0]):
            x[ch, y0:y1, x0:x1] = self.fill[ch]
        return x


def build_augment(cfg, c, h, w, mean):
    """The per-image transform on float (C, H, W) in [0, 1], in the Rust order."""
    ops = []
    if "crop" in cfg:
        cc = cfg["crop"]
        ops.append(T.RandomApply([T.RandomResizedCrop((h, w), scale=tuple(cc["scale"]),
                                                      ratio=tuple(cc["ratio"]),
                                                      antialias=False)], p=cc["p"]))
    if "flip" in cfg:
        ops.append(T.RandomHorizontalFlip(cfg["flip"]["p"]))
    if "rotation" in cfg:
        rc = cfg["rotation"]
        ops.append(T.RandomApply([T.RandomRotation(rc["degrees"],
                                                   interpolation=T.InterpolationMode.BILINEAR,
                                                   fill=0.0)], p=rc["p"]))
    if "color_jitter" in cfg:
        jc = cfg["color_jitter"]
        grey = c < 3
        jitter = T.ColorJitter(brightness=jc["brightness"] or None,
                               contrast=jc["contrast"] or None,
                               saturation=None if grey else (jc["saturation"] or None),
                               hue=None if grey else (jc["hue"] or None))
        ops.append(T.RandomApply([jitter], p=jc["p"]))
    if "grayscale" in cfg and c == 3:
        ops.append(T.RandomGrayscale(cfg["grayscale"]["p"]))
    if "blur" in cfg:
        bc = cfg["blur"]
        ops.append(T.RandomApply([Blur(bc["sigma"])], p=bc["p"]))
    if "solarize" in cfg and cfg["solarize"]["threshold"] < 256:
        sc = cfg["solarize"]
        ops.append(T.RandomSolarize(sc["threshold"] / 255.0, p=sc["p"]))
    if "cutout" in cfg:
        cc = cfg["cutout"]
        fill = [0.0] * c if cc.get("fill", "mean") == "zero" else [min(max(m, 0.0), 1.0) for m in mean]
        ops.append(T.RandomApply([Cutout(cc["size"], fill)], p=cc["p"]))
    return T.Compose(ops) if ops else (lambda x: x)


class Views:
    """uint8 (N, C, H, W) images -> normalised float views, quantised to 8 bits before the
    normalisation (as `Pipeline::write_normalised`)."""

    def __init__(self, aug_cfg, c, h, w, mean, std):
        self.aug = build_augment(aug_cfg, c, h, w, mean)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
        # `scale` and `offset` of Pipeline::new, in f32
        self.scale = 1.0 / (255.0 * self.std)
        self.offset = -self.mean / self.std

    def normalise_u8(self, x):
        return x.float() * self.scale + self.offset

    def augmented(self, x):
        xf = x.float() / 255.0
        v = torch.stack([self.aug(img) for img in xf])
        q = torch.floor(v * 255.0 + 0.5).clamp_(0, 255)
        return q * self.scale + self.offset


# ---------------------------------------------------------------------------------------------
# model, optimiser, schedule

def build_model(recipe, c, h):
    m = recipe.get("model", {})
    kind = m.get("backbone", "convnet")
    if kind == "resnet":
        enc = models.ResNet(m.get("depth", 18), cifar_stem=m.get("cifar_stem", True),
                            width=m.get("width", 1.0), in_channels=c)
    elif kind == "convnet":
        enc = models.ConvNet(tuple(m.get("widths", [32, 64, 128])), in_channels=c, image_size=h)
    else:
        raise SystemExit(f"model.backbone '{kind}': the quality reference supports resnet and convnet")
    meth = recipe.get("method", {})
    name = meth.get("name", "simclr")
    if name != "simclr":
        raise SystemExit(f"method.name '{name}': the quality reference supports simclr only")
    s = section(recipe, "method", SIMCLR_DEFAULTS)
    head = models.ProjectionHead(enc.out_dim, s["proj_hidden_dim"], s["proj_dim"], s["proj_layers"])
    return models.SimClr(enc, head, s["temperature"])


class Lars(torch.optim.Optimizer):
    """optim/optimizer.rs LARS: g += wd p; g *= eta ||p|| / ||g|| (both > 0, else 1) unless the
    group is excluded; buf = g (first step) or momentum buf + g; p -= lr buf."""

    def __init__(self, groups, lr, momentum, eta):
        super().__init__(groups, dict(lr=lr, momentum=momentum, eta=eta, weight_decay=0.0,
                                      adapt=True))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["weight_decay"] > 0:
                    d = d + g["weight_decay"] * p
                if g["adapt"]:
                    pn, gn = p.norm(), d.norm()
                    if pn > 0 and gn > 0:
                        d = d * (g["eta"] * pn / gn)
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = d.clone()
                else:
                    st["buf"].mul_(g["momentum"]).add_(d)
                p.sub_(g["lr"] * st["buf"])


def make_optimizer(params, kind, lr, weight_decay, momentum=0.9, betas=(0.9, 0.999), eps=1e-8,
                   eta=0.001, exclude_bias_norm=True):
    params = list(params)
    if exclude_bias_norm:
        groups = [{"params": [p for p in params if p.ndim != 1], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0,
                   "adapt": False}]
    else:
        groups = [{"params": params, "weight_decay": weight_decay}]
    groups = [g for g in groups if g["params"]]
    if kind == "sgd":
        for g in groups:
            g.pop("adapt", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if kind == "adamw":
        for g in groups:
            g.pop("adapt", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if kind == "lars":
        return Lars(groups, lr, momentum, eta)
    raise SystemExit(f"optim.kind '{kind}': use sgd, adamw or lars")


def warmup_cosine(step, base_lr, final_lr, warmup_steps, total_steps):
    """optim/schedule.rs `WarmupCosine::lr`."""
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    t = min((step - warmup_steps) / decay, 1.0)
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


# ---------------------------------------------------------------------------------------------
# time budget

_UNITS = {"h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "m": 60, "min": 60, "mins": 60,
          "minute": 60, "minutes": 60, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_DURATION = r"(\d+(?:\.\d+)?)\s*([a-z]+)"


def parse_duration(s):
    """'60m', '90s', '1h', '1h30m', '1h 30min', or plain seconds -> seconds."""
    s = s.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(_DURATION, s)
    if (not parts or re.sub(_DURATION, "", s).strip()
            or any(u not in _UNITS for _, u in parts)):
        raise argparse.ArgumentTypeError(f"bad duration '{s}' (e.g. 60m, 90s, 1h, 1h30m)")
    seconds = sum(float(v) * _UNITS[u] for v, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"time budget '{s}' must be longer than 0")
    return seconds


# share of the budget kept free, as selfsup's `budget::MARGIN` (the per-epoch check uses half)
MARGIN = 0.05


def plan_epochs(budget_s, elapsed_s, step_s, steps_per_epoch, eval_s, margin=MARGIN,
                max_epochs=None):
    """The largest whole number of epochs (>= 1) such that what is already spent (`elapsed_s`),
    the training steps and the final evaluation fit in `budget_s * (1 - margin)`."""
    avail = budget_s * (1.0 - margin) - elapsed_s - eval_s
    epochs = max(1, int(avail // (step_s * steps_per_epoch)))
    return min(epochs, max_epochs) if max_epochs else epochs


# ---------------------------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def encoder_features(encoder, views, x, batch):
    """eval/features.rs: BatchNorm in inference mode, no augmentation."""
    was = encoder.training
    encoder.eval()
    out = []
    for s in range(0, len(x), batch):
        out.append(encoder(views.normalise_u8(torch.from_numpy(x[s:s + batch]))))
    encoder.train(was)
    return torch.cat(out).numpy()


def linear_probe(xtr, ytr, evals, classes, cfg, seed, quick_steps=None):
    """eval/linear.rs `linear_probe`, trained once, scored on each (x, y) of `evals`."""
    mean = xtr.mean(0, dtype=np.float64)
    std = np.sqrt(((xtr.astype(np.float64) - mean) ** 2).mean(0))
    std[std < 1e-6] = 1.0
    tr = torch.from_numpy(((xtr - mean) / std).astype(np.float32))
    ltr = torch.from_numpy(ytr)
    n, d = tr.shape
    lin = nn.Linear(d, classes)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = make_optimizer(lin.parameters(), cfg["optimizer"], cfg["lr"], cfg["weight_decay"],
                         momentum=0.9, exclude_bias_norm=True)
    bs = max(1, min(cfg["batch_size"], n))
    spe = -(-n // bs)
    min_steps = cfg["min_steps"] if quick_steps is None else quick_steps
    epochs = max(cfg["epochs"], -(-min_steps // spe))
    total = epochs * spe
    step = 0
    for epoch in range(epochs):
        order = torch.tensor(epoch_order(n, seed, epoch))
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            lr = warmup_cosine(step, cfg["lr"], 0.0, 0, total)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(lin(tr[idx]), ltr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    accs = []
    with torch.no_grad():
        for x, y in evals:
            te = torch.from_numpy(((x - mean) / std).astype(np.float32))
            pred = lin(te).argmax(1).numpy()
            accs.append(100.0 * float((pred == y).mean()))
    return accs, step


def probe_steps(n, cfg, fractions, classes_count, quick_steps=None):
    """Optimiser steps of all the linear probes of one feature set (for the time estimate)."""
    total = 0
    min_steps = cfg["min_steps"] if quick_steps is None else quick_steps
    for f in fractions:
        m = n if f >= 1 else max(classes_count, round_half_away(n * f))
        bs = max(1, min(cfg["batch_size"], m))
        spe = -(-m // bs)
        total += max(cfg["epochs"], -(-min_steps // spe)) * spe
    return total


def evaluate_set(name, ftr, ytr, splits, classes, knn_cfg, lin_cfg, fractions, seed, linear,
                 quick_steps=None):
    """kNN and linear probe(s) of one feature set; returns {split: {...}}."""
    res = {s: {"features": name, "dim": int(ftr.shape[1])} for s in splits}
    bank, lbank = torch.from_numpy(ftr), torch.from_numpy(ytr)
    for s, (f, y) in splits.items():
        t1, t5 = knn_classify(bank, lbank, torch.from_numpy(f), torch.from_numpy(y), classes,
                              k=knn_cfg["k"], t=knn_cfg["temperature"], chunk=knn_cfg["chunk"])
        res[s]["knn_top1"] = t1
        if classes >= 5:
            res[s]["knn_top5"] = t5
    if linear:
        for frac in fractions:
            idx = stratified_subset(ytr, frac, seed)
            accs, steps = linear_probe(ftr[idx], ytr[idx], list(splits.values()), classes,
                                       lin_cfg, seed, quick_steps)
            for (s, _), a in zip(splits.items(), accs):
                if frac >= 1.0:
                    res[s]["linear_top1"] = a
                else:
                    res[s].setdefault("linear_top1_fraction", {})[f"{frac:g}"] = a
            res[next(iter(splits))].setdefault("_probe_steps", {})[f"{frac:g}"] = steps
    for s in splits:
        res[s].pop("_probe_steps", None)
    return res


def estimate_eval_s(encoder, views, x_sample, n_images, n_train, n_queries, dim, eval_batch,
                    knn_cfg, lin_cfg, fractions, classes, pixel_dim, baselines, quick_steps):
    """Seconds the final evaluation will take, from short timings: a feature batch, a kNN chunk
    per feature width (best of 2 each, after a warm-up), probe steps (median of 3 short runs),
    + 10 % + 2 s."""
    b = min(eval_batch, len(x_sample))
    encoder_features(encoder, views, x_sample[:b], b)          # warm-up
    times = []
    for _ in range(2):
        t = time.perf_counter()
        encoder_features(encoder, views, x_sample[:b], b)
        times.append(time.perf_counter() - t)
    feat = min(times) * n_images / b
    g = torch.Generator().manual_seed(0)

    def knn_s(d):
        bank = torch.randn(n_train, d, generator=g)
        q = torch.randn(min(knn_cfg["chunk"], n_queries), d, generator=g)
        lab = torch.randint(classes, (n_train,), generator=g)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            knn_classify(bank, lab, q, lab[:len(q)], classes, k=knn_cfg["k"],
                         t=knn_cfg["temperature"], chunk=knn_cfg["chunk"])
            times.append(time.perf_counter() - t)
        return min(times) * n_queries / len(q)

    def step_s(d):
        """Seconds per step of `linear_probe` itself on random features (after a warm-up run)."""
        x = torch.randn(4 * lin_cfg["batch_size"], d, generator=g).numpy()
        y = torch.randint(classes, (len(x),), generator=g).numpy()
        cfg = dict(lin_cfg, epochs=1)
        linear_probe(x, y, [(x[:8], y[:8])], classes, dict(cfg, min_steps=20), 0)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            _, steps = linear_probe(x, y, [(x[:8], y[:8])], classes, dict(cfg, min_steps=40), 0)
            times.append((time.perf_counter() - t) / steps)
        return float(np.median(times))

    nsteps = probe_steps(n_train, lin_cfg, fractions, classes, quick_steps)
    total = feat + knn_s(dim) + nsteps * step_s(dim)
    if baselines != "none":
        total += 2 * knn_s(pixel_dim)
    if baselines == "all":
        total += feat + knn_s(dim) + nsteps * step_s(dim) + 2 * nsteps * step_s(pixel_dim)
    return total * 1.1 + 2.0


# ---------------------------------------------------------------------------------------------

CALIB_WARMUP, CALIB_TIMED = 2, 4


def train_step(model, opt, views, xtr, idx, lr, clip=None):
    """One SimCLR step on the images `xtr[idx]` (uint8): two views each, view 1 of every image
    first (as `Tensor::cat`), loss, backward, optimiser step at `lr`. Returns the loss."""
    x = torch.from_numpy(xtr[np.asarray(idx)])
    inp = torch.cat([views.augmented(x), views.augmented(x)])
    for g in opt.param_groups:
        g["lr"] = lr
    loss = model.loss(inp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def run_evaluation(encoder, views, ds, classes, ebs, knn_cfg, lin_cfg, fractions, seed,
                   baselines, quick_steps=None, random_encoder=None):
    """eval/report.rs for the encoder and the baselines: {split: [row, ...]} for val and test."""
    feats = {s: encoder_features(encoder, views, ds[s][0], ebs) for s in ds}
    ytr = ds["train"][1]
    splits = [s for s in ("val", "test") if len(ds[s][1])]
    sets = [("SimCLR encoder", feats, True)]
    if baselines != "none":
        def pixels(x, standardised):
            t = torch.from_numpy(x)
            v = views.normalise_u8(t) if standardised else t.float() / 255.0
            return v.reshape(len(x), -1).numpy()
        for label, st in (("raw pixels (x/255)", False), ("standardised pixels", True)):
            sets.append((label, {s: pixels(ds[s][0], st) for s in ds}, baselines == "all"))
    if baselines == "all" and random_encoder is not None:
        torch.manual_seed(seed + 1)
        rnd = random_encoder()
        sets.append(("random-init encoder",
                     {s: encoder_features(rnd, views, ds[s][0], ebs) for s in ds}, True))
    results = {s: [] for s in splits}
    for label, f, lin in sets:
        r = evaluate_set(label, f["train"], ytr, {s: (f[s], ds[s][1]) for s in splits}, classes,
                         knn_cfg, lin_cfg, fractions, seed, lin, quick_steps)
        for s in splits:
            results[s].append(r[s])
    return results


def fmt_table(rows, knn_cfg, fractions):
    head = ["split", "features", "dim", f"kNN top-1 (k={knn_cfg['k']}, T={knn_cfg['temperature']:g})",
            "kNN top-5", "linear, all labels"]
    fr = [f for f in fractions if f < 1]
    head += [f"linear, {f * 100:g} % labels" for f in fr]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]

    def cell(v):
        return "" if v is None else f"{v:.1f}"

    for split, r in rows:
        cells = [split, r["features"], str(r["dim"]), cell(r.get("knn_top1")),
                 cell(r.get("knn_top5")), cell(r.get("linear_top1"))]
        cells += [cell(r.get("linear_top1_fraction", {}).get(f"{f:g}")) for f in fr]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True, help="selfsup TOML recipe")
    ap.add_argument("--data", help="IDX folder (or idx:DIR), instead of data.spec")
    ap.add_argument("--epochs", type=int, help="instead of train.epochs (with --time-budget: a cap)")
    ap.add_argument("--time-budget", type=parse_duration,
                    help="equal-wall-time mode: e.g. 60m, 90s, 1h (training + final evaluation)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1,000 training images, 1 epoch, short probes")
    ap.add_argument("--baselines", choices=["none", "pixels", "all"], default=None,
                    help="pixels (default): kNN on raw and standardised pixels; all: also their "
                         "linear probes and a random-init encoder; none. eval.baselines = false "
                         "in the recipe means none")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.config, "rb") as f:
        recipe = tomllib.load(f)
    method = recipe.get("method", {}).get("name", "simclr")
    backbone = recipe.get("model", {}).get("backbone", "convnet")
    if method != "simclr":
        raise SystemExit(f"method.name '{method}': the quality reference supports simclr only")
    if backbone not in ("resnet", "convnet"):
        raise SystemExit(f"model.backbone '{backbone}': the quality reference supports resnet "
                         f"and convnet")
    warnings, notes = check_keys(recipe)
    for k in warnings:
        leaf = k.rsplit(".", 1)[-1]
        elsewhere = [f"[{sec}]" for sec, keys in KNOWN.items() if leaf in keys
                     and not k.startswith(sec + ".")]
        hint = f" (a key of {', '.join(elsewhere)})" if elsewhere else ""
        print(f"warning: {args.config}: key '{k}' is not supported by the PyTorch reference "
              f"and is ignored{hint}", file=sys.stderr)
    if notes:
        print(f"note: no effect on the PyTorch side: {', '.join(notes)}", file=sys.stderr)

    data = recipe.get("data", {})
    train = section(recipe, "train", TRAIN_DEFAULTS)
    optim = section(recipe, "optim", OPTIM_DEFAULTS)
    ev = recipe.get("eval", {})
    knn_cfg = dict(KNN_DEFAULTS, **{k: v for k, v in ev.get("knn", {}).items() if k in KNN_DEFAULTS})
    lin_cfg = dict(LINEAR_DEFAULTS, **{k: v for k, v in ev.get("linear", {}).items()
                                       if k in LINEAR_DEFAULTS})
    baselines = args.baselines or ("pixels" if ev.get("baselines", True) else "none")
    seed = int(train["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)

    limit = data.get("limit")
    quick_steps = None
    if args.quick:
        limit = min(limit or 1000, 1000)
        quick_steps = 300
        lin_cfg["epochs"] = min(lin_cfg["epochs"], 10)
    epochs = args.epochs or (1 if args.quick else int(train["epochs"]))

    data_dir = resolve_data_dir(data.get("spec", "digits"), args.data)
    split_seed = int(data.get("split_seed", seed))
    val_fraction = float(data.get("val_fraction", 0.1))
    ds = load_data(data_dir, limit, val_fraction, split_seed, data.get("channels"),
                   data.get("image_size"))
    xtr, ytr = ds["train"]
    n, c, h, w = xtr.shape
    classes = int(max(ytr.max(), ds["test"][1].max())) + 1
    mean, std = channel_mean_std(xtr)
    name = dataset_name(data_dir)
    aug_cfg, aug_from = augment_config(recipe, name, c, h)
    views = Views(aug_cfg, c, h, w, mean, std)
    print(f"data: {data_dir} ('{name}'): train {n}, val {len(ds['val'][1])}, "
          f"test {len(ds['test'][1])}, {c}x{h}x{w}, {classes} classes; mean {mean}, std {std}")
    print(f"augment ({aug_from}): {json.dumps(aug_cfg)}")

    model = build_model(recipe, c, h)
    bs = min(int(train["batch_size"]), n)
    spe = max(1, n // bs)
    warmup = round_half_away(float(optim["warmup_epochs"]) * spe)
    opt = make_optimizer(model.parameters(), optim["kind"], optim["lr"], optim["weight_decay"],
                         momentum=optim["momentum"], betas=optim["betas"], eps=optim["eps"],
                         eta=optim["eta"], exclude_bias_norm=optim["exclude_bias_norm"])
    n_params = sum(p.numel() for p in model.encoder.parameters())
    print(f"model: {recipe.get('model', {})}, encoder out_dim {model.encoder.out_dim}, "
          f"{n_params} encoder parameters; optim {optim['kind']} lr {optim['lr']} "
          f"(warm-up {warmup} steps), batch {bs}, {spe} steps/epoch; threads {args.threads}")

    fractions = [1.0] + [f for f in lin_cfg["label_fractions"] if f < 1.0]
    n_eval_images = n + len(ds["val"][1]) + len(ds["test"][1])
    n_queries = len(ds["val"][1]) + len(ds["test"][1])

    # as selfsup: --time-budget, else the recipe's train.time_budget (--quick ignores it)
    budget = args.time_budget
    if budget is None and train.get("time_budget") and not args.quick:
        budget = parse_duration(str(train["time_budget"]))
    planned = epochs
    sched = dict(base_lr=optim["lr"], final_lr=optim["final_lr"], warmup_steps=warmup)
    eval_est = plan_info = None
    if budget:
        # calibration on throw-away steps: everything (weights, BatchNorm statistics, optimiser
        # state, torch RNG) is restored afterwards, so the run is the one `--epochs planned` does
        snap = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
                torch.get_rng_state())
        order = epoch_order(n, seed, 0)
        times = []
        for i in range(CALIB_WARMUP + CALIB_TIMED):
            b = i % spe
            ts = time.perf_counter()
            train_step(model, opt, views, xtr, order[b * bs:(b + 1) * bs],
                       warmup_cosine(i, total_steps=planned * spe, **sched),
                       optim["clip_grad_norm"])
            times.append(time.perf_counter() - ts)
        step_s = sum(times[CALIB_WARMUP:]) / CALIB_TIMED
        eval_est = estimate_eval_s(model.encoder, views, xtr, n_eval_images, n, n_queries,
                                   model.encoder.out_dim, int(train["eval_batch_size"]), knn_cfg,
                                   lin_cfg, fractions, classes, c * h * w, baselines, quick_steps)
        model.load_state_dict(snap[0])
        opt.load_state_dict(snap[1])
        torch.set_rng_state(snap[2])
        elapsed = time.perf_counter() - t_start
        planned = plan_epochs(budget, elapsed, step_s, spe, eval_est, max_epochs=args.epochs)
        plan_info = {"budget_s": budget, "step_s": step_s, "calibration_steps": CALIB_TIMED,
                     "calibration_warmup_steps": CALIB_WARMUP, "eval_estimate_s": eval_est,
                     "elapsed_at_plan_s": elapsed}
        print(f"time budget {budget:.0f} s: {step_s:.3f} s/step ({CALIB_TIMED} timed steps after "
              f"{CALIB_WARMUP}, thrown away), evaluation estimated at {eval_est:.0f} s, "
              f"{elapsed:.0f} s spent -> {planned} epochs planned ({planned * spe} steps)")
    total_steps = planned * spe

    step_times, losses_log = [], []
    t_train = time.perf_counter()
    global_step = epochs_run = 0
    model.train()
    for epoch in range(planned):
        if budget and epoch > 0:
            # the last epoch's speed; a machine slower than at calibration slows the evaluation too
            recent = sum(step_times[-spe:]) / len(step_times[-spe:])
            eval_now = eval_est * max(1.0, recent / plan_info["step_s"])
            spent = time.perf_counter() - t_start
            if spent + recent * spe + eval_now > budget * (1 - MARGIN / 2):
                print(f"time budget: epoch {epoch + 1} would not fit ({recent:.3f} s/step, "
                      f"evaluation now estimated at {eval_now:.0f} s), stopping after {epoch}")
                break
        t0 = time.perf_counter()
        order = epoch_order(n, seed, epoch)
        loss_sum = 0.0
        for b in range(spe):
            ts = time.perf_counter()
            lr = warmup_cosine(global_step, total_steps=total_steps, **sched)
            lv = train_step(model, opt, views, xtr, order[b * bs:(b + 1) * bs], lr,
                            optim["clip_grad_norm"])
            if not math.isfinite(lv):
                raise SystemExit(f"the loss became {lv} at epoch {epoch + 1} step {b + 1}")
            loss_sum += lv
            global_step += 1
            step_times.append(time.perf_counter() - ts)
        secs = time.perf_counter() - t0
        epochs_run += 1
        losses_log.append({"epoch": epoch + 1, "loss": loss_sum / spe, "lr": lr, "seconds": secs,
                           "images_per_s": spe * bs / secs})
        print(f"epoch {epoch + 1}/{planned}: loss {loss_sum / spe:.4f}, lr {lr:.4f}, "
              f"{spe * bs / secs:.0f} img/s, {secs:.1f} s", flush=True)
    train_seconds = time.perf_counter() - t_train
    print(f"epochs planned {planned}, run {epochs_run}; training {train_seconds:.1f} s")

    t_eval = time.perf_counter()
    results = run_evaluation(model.encoder, views, ds, classes, int(train["eval_batch_size"]),
                             knn_cfg, lin_cfg, fractions, seed, baselines, quick_steps,
                             random_encoder=lambda: build_model(recipe, c, h).encoder)
    rows = [(s, r) for s in results for r in results[s]]
    eval_seconds = time.perf_counter() - t_eval

    print()
    print(fmt_table(rows, knn_cfg, fractions))
    print()
    print(f"training {train_seconds:.1f} s, evaluation {eval_seconds:.1f} s"
          + (f" (estimated {eval_est:.0f} s)" if eval_est is not None else "")
          + f", total {time.perf_counter() - t_start:.1f} s")

    if args.json:
        def summary(s):
            enc = results[s][0]
            out = {"n": int(len(ds[s][1]))}
            out.update({k: v for k, v in enc.items() if k not in ("features", "dim")})
            out["rows"] = results[s]
            return out
        doc = {
            "tool": "pytorch",
            "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
            "threads": args.threads,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(),
            "config": args.config,
            "quick": args.quick,
            "data": str(data_dir),
            "sizes": {s: int(len(ds[s][1])) for s in ds},
            "epochs_planned": planned,
            "epochs_run": epochs_run,
            "steps": global_step,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "time_budget": plan_info,
            "epochs_log": losses_log,
            "augment": aug_cfg,
            "val": summary("val") if "val" in results else None,
            "test": summary("test"),
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
