#!/usr/bin/env python3
"""PyTorch reference numbers for `selfsup bench` (same line ids as the Rust side).

    python bench.py --json OUT.json [--threads N] [--quick] [--only id,id,...] [--stream-dir DIR]
                    [--variants eager,channels_last,...] [--compile]

Every line is timed after warm-up and reports the median of its repeats. See README.md for what
each line measures and how it differs from the Rust side.
"""

import argparse
import ctypes
import datetime
import gc
import gzip
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

import models

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_FMNIST = REPO.parent / "shared" / "data" / "fashion-mnist"

LINE_IDS = [
    "gemm", "step-a", "step-b", "step-c", "step-vit", "step-gpt", "step-mlm",
    "aug-32-1core", "aug-32-all", "aug-28-1core", "aug-28-all",
    "loader-step", "loader-stream", "knn", "linear",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# memory: per-line peak RSS via /proc (clear_refs 5 resets VmHWM to the current RSS)

def _malloc_trim():
    """Give freed heap memory back to the OS (glibc), so that a line does not start with the
    previous line's freed-but-retained memory in its RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak():
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb(pid="self"):
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024.0


def _uss_mb(pid):
    """Private (unshared) resident memory of a process, from smaps_rollup."""
    try:
        kb = 0
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    kb += int(line.split()[1])
        return kb / 1024.0
    except OSError:
        return None


def workers_memory(it):
    """DataLoader workers, read while they are alive: (sum of VmHWM, sum of private memory).
    VmHWM of a forked worker counts the pages it shares with the parent; the private sum
    does not, and is what the workers add to the parent's footprint."""
    hwm = uss = 0.0
    n = 0
    for w in getattr(it, "_workers", []) or []:
        v, u = peak_rss_mb(w.pid), _uss_mb(w.pid)
        if v is not None:
            hwm += v
            uss += u or 0.0
            n += 1
    return {"workers_peak_rss_mb": hwm if n else None,
            "workers_private_mb": uss if n else None, "workers_seen": n}


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


# ---------------------------------------------------------------------------------------------
# gemm

def line_gemm(quick):
    sizes = [256, 512] if quick else [1024, 2048]
    best, per = None, {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        a = torch.randn(n, n, generator=g)
        b = torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        reps = 3 if quick else (10 if n <= 1024 else 5)
        med, _ = timed(lambda: torch.matmul(a, b, out=c), 2, reps)
        gf = 2.0 * n ** 3 / med / 1e9
        per[str(n)] = {"median_s": med, "gflops": gf}
        if best is None or gf > best[1]:
            best = (n, gf, med)
    return {"what": f"f32 square matmul, best of n in {sizes}, GFLOP/s = 2n^3/t",
            "unit": "GFLOP/s", "value": best[1], "median_s": best[2], "n": best[0],
            "sizes": per}


# ---------------------------------------------------------------------------------------------
# SimCLR train steps

def count_flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


# Variants of the SimCLR steps: the same computation (same weights, same input, first loss
# checked against the eager one), run in the ways PyTorch offers on a CPU; a line reports its
# fastest. Compile variants come last, so that inductor's compiled kernels (and their OpenMP
# runtime) never run before an eager variant in the same line.
STEP_VARIANTS = {
    "eager": "eager, NCHW contiguous (PyTorch's default)",
    "channels_last": "eager, model and input in torch.channels_last (NHWC) memory format",
    "no-mkldnn": "eager, NCHW, torch.backends.mkldnn disabled (ATen's own convolutions)",
    "compile": "torch.compile(model.loss) (inductor, CPU; forward and backward), NCHW",
    "compile+channels_last": "torch.compile(model.loss), model and input in channels_last",
}
DEFAULT_VARIANTS = ["eager", "channels_last"]
COMPILE_VARIANTS = ["compile", "compile+channels_last"]
LOSS_RTOL = 1e-4   # a variant whose first loss differs more from the eager one is not counted


def make_step(id_, variant):
    """A fresh model (seed 0) and optimiser for one step variant: returns (model, step, prep):
    `prep(x)` puts an input batch in the variant's memory format, `step(x)` runs one training
    step (zero_grad, loss, backward, SGD) and returns the loss."""
    parts = set(variant.split("+"))
    unknown = parts - {"eager", "channels_last", "no-mkldnn", "compile"}
    if unknown:
        raise ValueError(f"unknown step variant {variant!r}")
    torch.manual_seed(0)
    model = models.build(id_)
    model.train()
    cl = "channels_last" in parts
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(models.param_groups(model, 5e-4), lr=0.06, momentum=0.9)
    loss_fn = torch.compile(model.loss) if "compile" in parts else model.loss
    no_mkldnn = "no-mkldnn" in parts

    def prep(x):
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    def plain_step(x):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        return loss.item()

    def step(x):
        if not no_mkldnn:
            return plain_step(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the flags' deprecated oneDNN TF32 setter
            with torch.backends.mkldnn.flags(enabled=False):
                return plain_step(x)

    return model, step, prep


def _free():
    gc.collect()
    _malloc_trim()


def _run_variant(id_, variant, x, warmup, reps, count=False):
    """One variant on the premade batch `x`: its own peak RSS (VmHWM reset at its start), the
    first call's time (compilation included), then `warmup - 1` more untimed steps and `reps`
    timed ones."""
    _free()
    reset_peak()
    base = _status_kb("self", "VmRSS") / 1024.0
    model, step, prep = make_step(id_, variant)
    xv = prep(x)
    out = {}
    if count:   # independent FLOP counts (no parameter update, grads cleared afterwards)
        out["flops_forward"] = count_flops(lambda: model.loss(xv))
        out["flops"] = count_flops(lambda: model.loss(xv).backward())
        for p in model.parameters():
            p.grad = None
    losses = []
    t0 = time.perf_counter()
    losses.append(step(xv))
    out["first_step_s"] = time.perf_counter() - t0
    med, ts = timed(lambda: losses.append(step(xv)), max(0, warmup - 1), reps)
    out.update(median_s=med, times_s=ts, loss=losses[0], loss_last=losses[-1],
               peak_rss_mb=peak_rss_mb(), rss_base_mb=base,
               params=sum(p.numel() for p in model.parameters()),
               enc_dim=model.encoder.out_dim)
    return out   # the model and its optimiser are freed with this frame


def run_variants(id_, x, variants, warmup, reps, count=False):
    """Runs every variant (eager first: the reference loss); returns (best name, {name: result}).
    A variant that fails or whose first loss is off by more than LOSS_RTOL is kept in the
    results (with `error` or `loss_mismatch`) but cannot be the best."""
    variants = ["eager"] + [v for v in variants if v != "eager"]
    res, best = {}, None
    for v in variants:
        log(f"[{id_}]   variant {v}")
        try:
            r = _run_variant(id_, v, x, warmup, reps, count=count and v == "eager")
        except Exception as e:  # e.g. torch.compile without a working C++ compiler
            res[v] = {"error": f"{type(e).__name__}: {e}"}
            log(f"[{id_}]   variant {v} FAILED: {res[v]['error']}")
            if v == "eager":
                raise
            continue
        finally:
            if "compile" in v:
                torch._dynamo.reset()   # drop the compiled graphs (and the model they hold)
            _free()
        if v != "eager":
            ref = res["eager"]["loss"]
            rel = abs(r["loss"] - ref) / max(abs(ref), 1e-30)
            r["loss_rel_diff"] = rel
            if not rel <= LOSS_RTOL:
                r["loss_mismatch"] = True
        res[v] = r
        ok = "error" not in r and not r.get("loss_mismatch")
        if ok and (best is None or r["median_s"] < res[best]["median_s"]):
            best = v
        log(f"[{id_}]   variant {v}: {r['median_s']:.4g} s/step, first loss {r['loss']:.7g}"
            + (" (MISMATCH, not counted)" if r.get("loss_mismatch") else ""))
    return best, res


def pick_variant(id_, variants, quick):
    """The fastest variant of `id_`'s step on a random batch of its size (when the step line has
    not run in this process)."""
    if len([v for v in variants if v != "eager"]) == 0:
        return "eager"
    cfg = models.CONFIGS[id_]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * cfg["n"], cfg["channels"], cfg["side"], cfg["side"], generator=g)
    best, _ = run_variants(id_, x, variants, 1, 2 if quick else 4)
    return best


def line_step(id_, quick, variants, chosen):
    cfg = models.CONFIGS[id_]
    n = min(8, cfg["n"]) if quick else cfg["n"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * n, cfg["channels"], cfg["side"], cfg["side"], generator=g)
    warmup, reps = (1, 2) if quick else ((2, 5) if cfg["kind"] == "resnet" else (3, 10))
    best, res = run_variants(id_, x, variants, warmup, reps, count=True)
    chosen[id_] = best
    eager, b = res["eager"], res[best]
    med = b["median_s"]
    flops = eager["flops"]
    if cfg["kind"] == "resnet":
        arch = f"ResNet-18 CIFAR stem width {cfg['width']} on {cfg['channels']}x{cfg['side']}x{cfg['side']}"
    else:
        arch = f"ConvNet {list(cfg['widths'])} on {cfg['channels']}x{cfg['side']}x{cfg['side']}"
    return {"what": f"SimCLR step: {arch}, N={n} -> {2 * n} views, head {eager['enc_dim']}->512->128, "
                    f"NT-Xent tau 0.5, backward, SGD(0.06, m 0.9, wd 5e-4 not on 1-D params); "
                    f"fastest of {', '.join(res)}: {best}",
            "unit": "img/s", "value": 2 * n / med, "median_s": med, "flops": flops,
            "loss": eager["loss"], "flops_forward": eager["flops_forward"],
            "gflops_per_s": flops / med / 1e9, "loss_last": b["loss_last"],
            "views": 2 * n, "images": n, "params": eager["params"], "times_s": b["times_s"],
            "variant": best,
            "variants": {v: (2 * n / r["median_s"] if "median_s" in r else None)
                         for v, r in res.items()},
            "variants_loss": {v: r.get("loss") for v, r in res.items()},
            "variants_first_step_s": {v: r.get("first_step_s") for v, r in res.items()},
            "variants_peak_rss_mb": {v: r.get("peak_rss_mb") for v, r in res.items()},
            **({"variants_error": {v: r["error"] for v, r in res.items() if "error" in r}}
               if any("error" in r for r in res.values()) else {}),
            **({"variants_loss_mismatch": [v for v, r in res.items() if r.get("loss_mismatch")]}
               if any(r.get("loss_mismatch") for r in res.values()) else {}),
            # the reported variant's own memory (each variant starts from a reset VmHWM)
            "peak_rss_mb": b["peak_rss_mb"], "rss_base_mb": b["rss_base_mb"]}


# ---------------------------------------------------------------------------------------------
# MAE train step (crates/selfsup-cli/src/bench/steps.rs `vit_step`)

def make_adamw(params):
    """optim/optimizer.rs AdamW (decoupled decay p *= 1 - lr wd, bias-corrected moments, eps
    outside the square root): torch.optim.AdamW. The fused CPU kernel when this torch has it."""
    kw = dict(lr=1.5e-4, betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(params, fused=True, **kw), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kw), "default"


def line_step_vit(quick):
    cfg = models.CONFIGS["step-vit"]
    n = cfg["n"]   # 64 also with --quick, as the Rust side (quick only cuts the repeats)
    c, side = cfg["channels"], cfg["side"]
    torch.manual_seed(0)
    model = models.build("step-vit")
    model.train()
    opt, opt_impl = make_adamw(models.param_groups(model, 0.05))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, side, side, generator=g)

    # FLOPs with explicit attention matmuls (FlopCounterMode then sees the two bmm of every
    # attention, as the Rust count has them); grads cleared afterwards, no update
    models.set_sdpa(model, False)
    flops_fwd = count_flops(lambda: model.loss(x))
    flops = count_flops(lambda: model.loss(x).backward())
    opt.zero_grad(set_to_none=True)
    models.set_sdpa(model, True)

    losses = []

    def step():
        # a new mask every step (argsort of uniform noise per sample, inside model.loss)
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    warmup, reps = (1, 2) if quick else (3, 15)
    med, ts = timed(step, warmup, reps)
    return {"what": f"MAE step: ViT mini (patch {cfg['patch']}, {cfg['dim']}-d, {cfg['depth']} "
                    f"blocks, {cfg['heads']} heads; decoder {cfg['decoder_dim']}-d, "
                    f"{cfg['decoder_depth']} blocks), {c}x{side}x{side}, N={n}, mask "
                    f"{cfg['mask_ratio']} ({model.keep} of {model.encoder.num_patches} patches "
                    f"visible), norm-pix MSE, SDPA attention, backward, AdamW(1.5e-4, "
                    f"(0.9, 0.95), wd 0.05 not on 1-D params, {opt_impl})",
            "unit": "img/s", "value": n / med, "median_s": med, "flops": flops,
            "loss": losses[0], "flops_forward": flops_fwd, "gflops_per_s": flops / med / 1e9,
            "loss_last": losses[-1], "images": n, "optimizer": opt_impl, "reps": reps,
            "params": sum(p.numel() for p in model.parameters()), "times_s": ts}


def line_step_text(id_, quick):
    """One next-token (step-gpt) or masked-LM (step-mlm) training step on random tokens:
    forward, cross-entropy, backward, gradient clipping at 1, AdamW (wd not on 1-D params)."""
    cfg = models.CONFIGS[id_]
    n, seq, vocab = cfg["n"], cfg["seq"], cfg["vocab"]
    torch.manual_seed(0)
    model = models.build(id_)
    model.train()
    gpt = cfg["kind"] == "gpt"
    kw = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-8) if gpt else dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    groups = models.param_groups(model, 0.1 if gpt else 0.01)
    try:
        opt, impl = torch.optim.AdamW(groups, fused=True, **kw), "fused"
    except (RuntimeError, TypeError, ValueError):
        opt, impl = torch.optim.AdamW(groups, **kw), "default"
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (n, seq + 1 if gpt else seq), generator=g)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(ids) if gpt else model.loss(ids, generator=g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())

    warmup, reps = (1, 2) if quick else (3, 15)
    med, ts = timed(step, warmup, reps)
    what = (f"{'GPT' if gpt else 'MLM'} step: {cfg['dim']}-d, {cfg['depth']} blocks, "
            f"{cfg['heads']} heads, vocabulary {vocab}, {n} x {seq} tokens, SDPA attention, "
            f"backward, clip 1, AdamW ({impl})")
    return {"what": what, "unit": "tok/s", "value": n * seq / med, "median_s": med,
            "loss": losses[0], "loss_last": losses[-1], "reps": reps, "times_s": ts,
            "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# augmentation

def pipeline(kind, mean, std):
    """The torchvision pipeline closest to AugmentConfig::for_dataset (see README)."""
    if kind == "cifar10":   # for_dataset("cifar10", 3, 32)
        ops = [
            T.RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(0.75, 4.0 / 3.0)),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ]
    elif kind == "fashion-mnist":   # for_dataset("fashion-mnist", 1, 28)
        ops = [
            T.RandomResizedCrop(28, scale=(0.2, 1.0), ratio=(0.75, 4.0 / 3.0)),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        ]
    else:
        raise ValueError(kind)
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


class TwoViews(Dataset):
    """uint8 images (N, H, W) or (N, H, W, 3), turned into PIL in __getitem__ (as torchvision's
    MNIST/CIFAR datasets do), two independent views each."""

    def __init__(self, images, transform):
        self.images = images
        self.transform = transform
        self.mode = "L" if images.ndim == 3 else "RGB"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode=self.mode)
        return self.transform(img), self.transform(img)


def channel_mean_std(images):
    """Per-channel mean/std of pixel/255 over the set (as `channel_mean_std` on the Rust side),
    from per-value counts (no float copy of the whole set)."""
    c = 1 if images.ndim == 3 else 3
    x = images.reshape(-1, c)
    mean, std = [], []
    v = np.arange(256, dtype=np.float64) / 255.0
    for ch in range(c):
        cnt = np.bincount(x[:, ch], minlength=256).astype(np.float64)
        m = (cnt * v).sum() / cnt.sum()
        mean.append(float(m))
        std.append(float(math.sqrt((cnt * (v - m) ** 2).sum() / cnt.sum())))
    return tuple(mean), tuple(std)


def random_images(kind, n, seed):
    rng = np.random.default_rng(seed)
    shape = (n, 32, 32, 3) if kind == "cifar10" else (n, 28, 28)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def line_aug_1core(kind, quick, threads):
    n_img = 512 if quick else 4096
    imgs = random_images(kind, n_img, 7)
    mean, std = channel_mean_std(imgs)
    ds = TwoViews(imgs, pipeline(kind, mean, std))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        def one_pass():
            for v1, v2 in DataLoader(ds, batch_size=256, num_workers=0):
                pass
        med, ts = timed(one_pass, 1, 2 if quick else 3)
    finally:
        torch.set_num_threads(threads)
    return {"what": f"torchvision two-view SimCLR augmentation ({kind}), one process, 1 thread, "
                    f"{n_img} uint8 images -> PIL -> 2 views, collated in batches of 256",
            "unit": "img/s", "value": n_img / med, "median_s": med,
            "views_per_s": 2 * n_img / med, "images": n_img, "times_s": ts}


def loader_rate(ds, batch, workers, skip, window, windows, seed=0):
    """Images/s of a DataLoader in steady state: the first `skip` batches (worker start-up and
    prefetch) are not timed; then `windows` windows of `window` batches, median."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True, generator=g,
                        drop_last=True)
    it = iter(loader)
    t_start = time.perf_counter()
    for _ in range(skip):
        next(it)
    startup = time.perf_counter() - t_start
    ts = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(window):
            next(it)
        ts.append(time.perf_counter() - t0)
    wmem = workers_memory(it)
    del it, loader
    return ts, startup, wmem


def line_aug_all(kind, quick, workers):
    batch = 256
    skip = 2 * workers + 1   # every worker's prefetched batches (prefetch_factor 2) + 1
    window, windows = (2, 2) if quick else (8, 3)
    n_img = batch * (skip + window * windows + workers * 2 + 2)   # workers stay alive to the end
    imgs = random_images(kind, n_img, 7)
    mean, std = channel_mean_std(imgs)
    ds = TwoViews(imgs, pipeline(kind, mean, std))
    ts, startup, wmem = loader_rate(ds, batch, workers, skip, window, windows)
    med = statistics.median(ts)
    per = window * batch
    return {"what": f"torchvision two-view SimCLR augmentation ({kind}), DataLoader "
                    f"num_workers={workers} batch {batch}, steady state after {skip} batches",
            "unit": "img/s", "value": per / med, "median_s": med, "views_per_s": 2 * per / med,
            "images_per_window": per, "workers": workers, "startup_s": startup,
            **wmem, "times_s": ts}


# ---------------------------------------------------------------------------------------------
# loader + step on Fashion-MNIST

def read_idx(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(folder, stem):
    for name in (stem + ".gz", stem):
        p = Path(folder) / name
        if p.exists():
            return p
    return None


def feed_step(loader, variant, warm, k):
    """The step-c model (in `variant`) fed by `loader` (batches of two views `(v1, v2)`, or
    `((v1, v2), labels)` from an ImageFolder): `warm` untimed steps, `k` timed ones (loading,
    concatenation, memory-format conversion and step), then the same `k` batches again without
    the loader (workers gone). Returns the seconds per step with and without the loader and the
    workers' memory."""
    _, step, prep = make_step("step-c", variant)

    def views(b):
        v1, v2 = b if torch.is_tensor(b[0]) else b[0]
        return torch.cat([v1, v2])

    it = iter(loader)
    for _ in range(warm):
        step(prep(views(next(it))))
    batches = []
    t0 = time.perf_counter()
    for _ in range(k):
        x = views(next(it))
        step(prep(x))
        batches.append(x)
    t_loader = (time.perf_counter() - t0) / k
    wmem = workers_memory(it)
    del it
    t0 = time.perf_counter()
    for x in batches:
        step(prep(x))
    t_step = (time.perf_counter() - t0) / k
    if "compile" in variant:
        torch._dynamo.reset()
    return t_loader, t_step, wmem, batches[0].shape[0]


def line_loader_step(quick, data_dir, threads, variant):
    path = find_idx(data_dir, "train-images-idx3-ubyte")
    if path is None:
        return {"what": "Fashion-MNIST DataLoader feeding the step-c model", "unit": "img/s",
                "value": None, "skipped": f"no train-images-idx3-ubyte(.gz) in {data_dir}"}
    imgs = read_idx(path)
    mean, std = channel_mean_std(imgs)
    ds = TwoViews(imgs, pipeline("fashion-mnist", mean, std))
    n = 256
    warm, k = (1, 3) if quick else (3, 20)
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=n, shuffle=True, num_workers=2, drop_last=True,
                        generator=g)
    t_loader, t_step, wmem, views = feed_step(loader, variant, warm, k)
    slowdown = max(0.0, 1.0 - t_step / t_loader)
    return {"what": f"Fashion-MNIST train set, DataLoader(num_workers=2, batch {n}, two views, "
                    f"28x28 pipeline) feeding the step-c model ({variant}): {k} steps after "
                    f"{warm} warm-up, vs the same {k} steps on pre-made batches",
            "unit": "img/s", "value": views / t_loader, "median_s": t_loader,
            "img_per_s": views / t_loader, "with_loader_img_per_s": views / t_loader,
            "step_img_per_s": views / t_step, "slowdown": slowdown, "wait_share": slowdown,
            "t_loader_step_s": t_loader, "t_step_s": t_step, "steps": k, "views": views,
            "variant": variant, **wmem,
            "note": "median_s is the mean seconds per step with the loader over the k steps; "
                    "slowdown = 1 - t_step_s / t_loader_step_s (wait_share: the same, older name)"}


# ---------------------------------------------------------------------------------------------
# streaming loader: an image folder decoded from files

def grey_loader(path):
    """torchvision's pil_loader, in grey: open, decode, convert("L")."""
    with open(path, "rb") as f:
        return Image.open(f).convert("L")


class TwoViewTransform:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


def folder_mean_std(files, sample, seed=0):
    """Mean/std of pixel/255 over a seeded random sample of the files (grey)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(files), size=min(sample, len(files)), replace=False)
    imgs = np.stack([np.asarray(grey_loader(files[i])) for i in idx])
    return channel_mean_std(imgs)


def line_loader_stream(quick, stream_dir, threads, variant):
    what = "image folder (ImageFolder, PIL decode) through DataLoader, alone and feeding step-c"
    if not stream_dir:
        return {"what": what, "unit": "img/s", "value": None,
                "skipped": "no --stream-dir given"}
    if not Path(stream_dir).is_dir():
        return {"what": what, "unit": "img/s", "value": None,
                "skipped": f"no image folder {stream_dir}"}
    t0 = time.perf_counter()
    ds = torchvision.datasets.ImageFolder(stream_dir, loader=grey_loader)
    scan_s = time.perf_counter() - t0
    files = [p for p, _ in ds.samples]
    sample = 2000
    mean, std = folder_mean_std(files, sample)
    ds.transform = TwoViewTransform(pipeline("fashion-mnist", mean, std))
    n, workers = 256, threads
    skip, batches = (1, 3) if quick else (5, 60)
    if len(ds) < n * (skip + batches):
        return {"what": what, "unit": "img/s", "value": None,
                "skipped": f"{len(ds)} images in {stream_dir}, {n * (skip + batches)} needed"}

    def make_loader(seed):
        g = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=n, shuffle=True, generator=g, num_workers=workers,
                          drop_last=True, persistent_workers=False)

    # (a) the loader alone
    it = iter(make_loader(0))
    t0 = time.perf_counter()
    for _ in range(skip):
        next(it)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    t_alone = time.perf_counter() - t0
    wmem_alone = workers_memory(it)
    del it
    _free()
    # (b) the same loader feeding the step-c model
    warm, k = (1, 3) if quick else (3, 20)
    t_loader, t_step, wmem_step, views = feed_step(make_loader(1), variant, warm, k)
    slowdown = max(0.0, 1.0 - t_step / t_loader)
    img_per_s = batches * n / t_alone
    wmem = {key: (max(x for x in (wmem_alone[key], wmem_step[key]) if x is not None)
                  if (wmem_alone[key] is not None or wmem_step[key] is not None) else None)
            for key in ("workers_peak_rss_mb", "workers_private_mb", "workers_seen")}
    return {"what": f"{len(ds)} files in {len(ds.classes)} class folders, ImageFolder (PIL open, "
                    f"convert L), two views (28x28 pipeline), DataLoader(num_workers={workers}, "
                    f"batch {n}, shuffle): {batches} batches after {skip} alone; then feeding the "
                    f"step-c model ({variant}): {k} steps after {warm}, vs the same steps on "
                    f"pre-made batches",
            "unit": "img/s", "value": img_per_s, "median_s": t_alone / batches,
            "img_per_s": img_per_s, "views_per_s": 2 * img_per_s,
            "step_img_per_s": views / t_step, "with_loader_img_per_s": views / t_loader,
            "slowdown": slowdown, "t_loader_step_s": t_loader, "t_step_s": t_step,
            "batches": batches, "skip": skip, "steps": k, "warm": warm, "batch": n,
            "workers": workers, "files": len(ds), "classes": len(ds.classes),
            "scan_s": scan_s, "startup_s": startup, "mean": mean, "std": std,
            "mean_std_sample": min(sample, len(ds)), "variant": variant,
            **wmem,
            "loader_alone_workers": wmem_alone, "with_step_workers": wmem_step,
            "note": "value: source images/s of the loader alone (each gives two views); "
                    "median_s: seconds per batch of the loader alone; "
                    "slowdown = 1 - t_step_s / t_loader_step_s; workers_*: the larger of the "
                    "two phases"}


# ---------------------------------------------------------------------------------------------
# kNN and linear probe on synthetic class-structured features

def features(quick, d=512, classes=10, seed=0, sep=0.1):
    """Class means ~ N(0, sep^2 I), samples = mean + N(0, I); float32."""
    n_train, n_test = (6000, 1000) if quick else (60000, 10000)
    rng = np.random.default_rng(seed)
    means = (rng.standard_normal((classes, d)) * sep).astype(np.float32)
    ytr = rng.integers(0, classes, n_train)
    yte = rng.integers(0, classes, n_test)
    xtr = means[ytr] + rng.standard_normal((n_train, d), dtype=np.float32)
    xte = means[yte] + rng.standard_normal((n_test, d), dtype=np.float32)
    return xtr, ytr, xte, yte


def knn_classify(train, ytr, test, yte, classes, k=200, t=0.1, chunk=512):
    """eval/knn.rs: cosine on l2-normalised rows, top-k, votes exp(s/T), chunks of test rows."""
    train_t = models.l2_normalize(train).t().contiguous()
    k = max(1, min(k, train.shape[0]))
    hit1 = hit5 = 0
    for s in range(0, test.shape[0], chunk):
        q = models.l2_normalize(test[s:s + chunk])
        sim = q @ train_t
        val, idx = sim.topk(k, dim=1)
        w = (val / t).double().exp()
        votes = torch.zeros(q.shape[0], classes, dtype=torch.float64)
        votes.scatter_add_(1, ytr[idx], w)
        top = votes.topk(min(5, classes), dim=1).indices
        lab = yte[s:s + chunk]
        hit1 += int((top[:, 0] == lab).sum())
        hit5 += int((top == lab.unsqueeze(1)).any(1).sum())
    n = test.shape[0]
    return 100.0 * hit1 / n, 100.0 * hit5 / n


def line_knn(quick):
    xtr, ytr, xte, yte = features(quick)
    tr, te = torch.from_numpy(xtr), torch.from_numpy(xte)
    ltr, lte = torch.from_numpy(ytr), torch.from_numpy(yte)
    res = []
    med, ts = timed(lambda: res.append(knn_classify(tr, ltr, te, lte, 10)), 1, 1 if quick else 3)
    return {"what": f"weighted kNN (k 200, T 0.1, cosine, chunks of 512) on synthetic features: "
                    f"train {xtr.shape[0]}x512, test {xte.shape[0]}x512, 10 classes",
            "unit": "s", "value": med, "median_s": med, "accuracy": res[-1][0],
            "top5": res[-1][1], "times_s": ts}


def linear_probe(xtr, ytr, xte, yte, classes, epochs, bs=256, lr=1e-3, seed=0):
    """eval/linear.rs: standardise (train mean/std in f64, std < 1e-6 -> 1), zero-initialised
    Linear, cross-entropy, Adam (wd 0), cosine per step to 0, batch 256 (last partial kept)."""
    mean = xtr.mean(0, dtype=np.float64)
    std = xtr.std(0, dtype=np.float64)
    std[std < 1e-6] = 1.0
    tr = torch.from_numpy(((xtr - mean) / std).astype(np.float32))
    te = torch.from_numpy(((xte - mean) / std).astype(np.float32))
    ltr, lte = torch.from_numpy(ytr), torch.from_numpy(yte)
    n, d = tr.shape
    lin = torch.nn.Linear(d, classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    steps_per_epoch = math.ceil(n / bs)
    total = epochs * steps_per_epoch
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
            loss = F.cross_entropy(lin(tr[idx]), ltr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        pred = lin(te).argmax(1)
    return 100.0 * float((pred == lte).float().mean()), step


def line_linear(quick):
    xtr, ytr, xte, yte = features(quick)
    epochs = 2 if quick else 10
    res = []
    # warm-up on a slice (first-call overheads of the optimiser), not timed
    linear_probe(xtr[:2048], ytr[:2048], xte[:256], yte[:256], 10, 1)
    med, ts = timed(lambda: res.append(linear_probe(xtr, ytr, xte, yte, 10, epochs)), 0,
                    1 if quick else 3)
    return {"what": f"linear probe on synthetic features {xtr.shape[0]}x512 -> 10: standardise, "
                    f"Adam 1e-3 cosine, batch 256, {epochs} epochs ({res[-1][1]} steps), test eval",
            "unit": "s", "value": med, "median_s": med, "accuracy": res[-1][0],
            "epochs": epochs, "steps": res[-1][1], "times_s": ts}


# ---------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--only", default="", help="comma-separated line ids (default: all)")
    ap.add_argument("--data", default=str(DEFAULT_FMNIST), help="Fashion-MNIST folder (IDX)")
    ap.add_argument("--stream-dir", default=None,
                    help="image folder (DIR/<class>/<file>.png|jpg) for loader-stream")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help="step variants tried by step-a/b/c (the fastest is reported), from: "
                         + ", ".join(STEP_VARIANTS) + f" (default: {','.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--compile", action="store_true",
                    help="also try " + " and ".join(COMPILE_VARIANTS) + " (inductor; adds a "
                         "compilation of about 20-40 s per model)")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if args.compile:
        variants += [v for v in COMPILE_VARIANTS if v not in variants]
    for v in variants:
        if v not in STEP_VARIANTS:
            ap.error(f"unknown variant {v!r}; known: {', '.join(STEP_VARIANTS)}")

    threads = args.threads
    torch.set_num_threads(threads)
    cpus = os.cpu_count()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in LINE_IDS:
            ap.error(f"unknown line id {s!r}; known: {', '.join(LINE_IDS)}")
    ids = [i for i in LINE_IDS if not only or i in only]

    chosen = {}   # step line id -> its fastest variant (the loader lines use step-c's)
    runners = {
        "gemm": lambda: line_gemm(args.quick),
        "step-a": lambda: line_step("step-a", args.quick, variants, chosen),
        "step-b": lambda: line_step("step-b", args.quick, variants, chosen),
        "step-c": lambda: line_step("step-c", args.quick, variants, chosen),
        "step-vit": lambda: line_step_vit(args.quick),
        "step-gpt": lambda: line_step_text("step-gpt", args.quick),
        "step-mlm": lambda: line_step_text("step-mlm", args.quick),
        "aug-32-1core": lambda: line_aug_1core("cifar10", args.quick, threads),
        "aug-32-all": lambda: line_aug_all("cifar10", args.quick, cpus),
        "aug-28-1core": lambda: line_aug_1core("fashion-mnist", args.quick, threads),
        "aug-28-all": lambda: line_aug_all("fashion-mnist", args.quick, cpus),
        "loader-step": lambda: line_loader_step(args.quick, args.data, threads,
                                                chosen.get("step-c", "eager")),
        "loader-stream": lambda: line_loader_stream(args.quick, args.stream_dir, threads,
                                                    chosen.get("step-c", "eager")),
        "knn": lambda: line_knn(args.quick),
        "linear": lambda: line_linear(args.quick),
    }

    lines = []
    failed = False
    for id_ in ids:
        log(f"[{id_}] ...")
        if id_ in ("loader-step", "loader-stream") and "step-c" not in chosen and (
                id_ == "loader-step" or (args.stream_dir and Path(args.stream_dir).is_dir())):
            # the loader lines run step-c's fastest variant; probed here, outside the line's
            # time and memory, when the step-c line has not run
            log(f"[{id_}] probing step-c's variants (the step-c line has not run)")
            try:
                chosen["step-c"] = pick_variant("step-c", variants, args.quick)
            except Exception as e:
                log(f"[{id_}] probe FAILED ({type(e).__name__}: {e}); eager")
        can_reset = reset_peak()
        rss_base = _status_kb("self", "VmRSS") / 1024.0
        t0 = time.perf_counter()
        try:
            rec = runners[id_]()
        except Exception as e:  # keep going, report the failure in the line
            failed = True
            rec = {"what": "failed", "unit": None, "value": None, "error": f"{type(e).__name__}: {e}"}
            log(f"[{id_}] FAILED: {rec['error']}")
        rec = {"id": id_, **rec}
        # a step line sets both to those of the variant it reports
        if rec.get("peak_rss_mb") is None:
            rec["peak_rss_mb"] = peak_rss_mb()
        if rec.get("rss_base_mb") is None:
            rec["rss_base_mb"] = rss_base   # RSS at the line's start (torch + libraries loaded)
        if not can_reset:
            rec["peak_rss_note"] = "could not reset VmHWM: process-wide peak"
        if rec.get("workers_private_mb") is not None:
            rec["peak_rss_total_mb"] = rec["peak_rss_mb"] + rec["workers_private_mb"]
        rec["wall_s"] = time.perf_counter() - t0
        lines.append(rec)
        v = rec.get("value")
        log(f"[{id_}] {'-' if v is None else f'{v:.4g}'} {rec.get('unit') or ''}"
            f"  ({rec['wall_s']:.1f}s wall, peak {rec['peak_rss_mb']:.0f} MB)")

    out = {"tool": "pytorch", "version": torch.__version__, "threads": threads,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "cpu": cpu_model(), "lines": lines}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")

    print(f"pytorch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"threads {threads}, {out['cpu']}")
    print(f"{'id':<14} {'value':>12} {'unit':<8} {'median_s':>10} {'peak MB':>9}  extra")
    for r in lines:
        v = r.get("value")
        extra = {k: r[k] for k in ("variant", "variants", "flops", "loss", "accuracy",
                                   "slowdown", "step_img_per_s", "with_loader_img_per_s",
                                   "skipped", "error") if k in r}
        if isinstance(extra.get("variants"), dict):
            extra["variants"] = "{" + ", ".join(
                f"{k}: {'-' if val is None else f'{val:.4g}'}"
                for k, val in extra["variants"].items()) + "}"
        ms = r.get("median_s")
        print(f"{r['id']:<14} {'-' if v is None else f'{v:.4g}':>12} {r.get('unit') or '':<8} "
              f"{'-' if ms is None else f'{ms:.4g}':>10} {r['peak_rss_mb']:>9.0f}  "
              + ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
                          for k, val in extra.items()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
