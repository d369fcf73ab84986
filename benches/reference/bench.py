#!/usr/bin/env python3
"""PyTorch reference numbers for `selfsup bench` (same line ids as the Rust side).

    python bench.py --json OUT.json [--threads N] [--quick] [--only id,id,...]

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
    "loader-step", "knn", "linear",
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


def line_step(id_, quick):
    cfg = models.CONFIGS[id_]
    n = min(8, cfg["n"]) if quick else cfg["n"]
    torch.manual_seed(0)
    model = models.build(id_)
    model.train()
    opt = torch.optim.SGD(models.param_groups(model, 5e-4), lr=0.06, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * n, cfg["channels"], cfg["side"], cfg["side"], generator=g)

    # independent FLOP counts (no parameter update, grads cleared afterwards)
    flops_fwd = count_flops(lambda: model.loss(x))
    flops = count_flops(lambda: model.loss(x).backward())
    opt.zero_grad(set_to_none=True)

    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    warmup, reps = (1, 2) if quick else ((2, 5) if cfg["kind"] == "resnet" else (3, 10))
    med, ts = timed(step, warmup, reps)
    if cfg["kind"] == "resnet":
        arch = f"ResNet-18 CIFAR stem width {cfg['width']} on {cfg['channels']}x{cfg['side']}x{cfg['side']}"
    else:
        arch = f"ConvNet {list(cfg['widths'])} on {cfg['channels']}x{cfg['side']}x{cfg['side']}"
    enc_dim = model.encoder.out_dim
    return {"what": f"SimCLR step: {arch}, N={n} -> {2 * n} views, head {enc_dim}->512->128, "
                    f"NT-Xent tau 0.5, backward, SGD(0.06, m 0.9, wd 5e-4 not on 1-D params)",
            "unit": "img/s", "value": 2 * n / med, "median_s": med, "flops": flops,
            "loss": losses[0], "flops_forward": flops_fwd, "gflops_per_s": flops / med / 1e9,
            "loss_last": losses[-1], "views": 2 * n, "images": n,
            "params": sum(p.numel() for p in model.parameters()), "times_s": ts}


# ---------------------------------------------------------------------------------------------
# MAE train step (bench.rs `vit_step`)

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


def line_loader_step(quick, data_dir, threads):
    path = find_idx(data_dir, "train-images-idx3-ubyte")
    if path is None:
        return {"what": "Fashion-MNIST DataLoader feeding the step-c model", "unit": "img/s",
                "value": None, "skipped": f"no train-images-idx3-ubyte(.gz) in {data_dir}"}
    imgs = read_idx(path)
    mean, std = channel_mean_std(imgs)
    ds = TwoViews(imgs, pipeline("fashion-mnist", mean, std))
    n = 256
    warm, k = (1, 3) if quick else (3, 20)
    torch.manual_seed(0)
    model = models.build("step-c")
    model.train()
    opt = torch.optim.SGD(models.param_groups(model, 5e-4), lr=0.06, momentum=0.9)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        return loss.item()

    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=n, shuffle=True, num_workers=2, drop_last=True,
                        generator=g)
    it = iter(loader)
    batches = []
    for _ in range(warm):
        v1, v2 = next(it)
        step(torch.cat([v1, v2]))
    t0 = time.perf_counter()
    for _ in range(k):
        v1, v2 = next(it)
        x = torch.cat([v1, v2])
        step(x)
        batches.append(x)
    t_loader = (time.perf_counter() - t0) / k
    wmem = workers_memory(it)
    del it, loader
    # the same k steps on the batches already made (workers gone)
    t0 = time.perf_counter()
    for x in batches:
        step(x)
    t_step = (time.perf_counter() - t0) / k
    views = 2 * n
    return {"what": f"Fashion-MNIST train set, DataLoader(num_workers=2, batch {n}, two views, "
                    f"28x28 pipeline) feeding the step-c model: {k} steps after {warm} warm-up, "
                    f"vs the same {k} steps on pre-made batches",
            "unit": "img/s", "value": views / t_loader, "median_s": t_loader,
            "img_per_s": views / t_loader, "step_img_per_s": views / t_step,
            "wait_share": max(0.0, 1.0 - t_step / t_loader), "t_loader_step_s": t_loader,
            "t_step_s": t_step, "steps": k, "views": views, **wmem,
            "note": "median_s is the mean seconds per step with the loader over the k steps"}


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
    args = ap.parse_args()

    threads = args.threads
    torch.set_num_threads(threads)
    cpus = os.cpu_count()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in LINE_IDS:
            ap.error(f"unknown line id {s!r}; known: {', '.join(LINE_IDS)}")
    ids = [i for i in LINE_IDS if not only or i in only]

    runners = {
        "gemm": lambda: line_gemm(args.quick),
        "step-a": lambda: line_step("step-a", args.quick),
        "step-b": lambda: line_step("step-b", args.quick),
        "step-c": lambda: line_step("step-c", args.quick),
        "step-vit": lambda: line_step_vit(args.quick),
        "step-gpt": lambda: line_step_text("step-gpt", args.quick),
        "step-mlm": lambda: line_step_text("step-mlm", args.quick),
        "aug-32-1core": lambda: line_aug_1core("cifar10", args.quick, threads),
        "aug-32-all": lambda: line_aug_all("cifar10", args.quick, cpus),
        "aug-28-1core": lambda: line_aug_1core("fashion-mnist", args.quick, threads),
        "aug-28-all": lambda: line_aug_all("fashion-mnist", args.quick, cpus),
        "loader-step": lambda: line_loader_step(args.quick, args.data, threads),
        "knn": lambda: line_knn(args.quick),
        "linear": lambda: line_linear(args.quick),
    }

    lines = []
    failed = False
    for id_ in ids:
        log(f"[{id_}] ...")
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
        rec["peak_rss_mb"] = peak_rss_mb()
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
        extra = {k: r[k] for k in ("flops", "loss", "accuracy", "wait_share", "step_img_per_s",
                                   "skipped", "error") if k in r}
        ms = r.get("median_s")
        print(f"{r['id']:<14} {'-' if v is None else f'{v:.4g}':>12} {r.get('unit') or '':<8} "
              f"{'-' if ms is None else f'{ms:.4g}':>10} {r['peak_rss_mb']:>9.0f}  "
              + ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
                          for k, val in extra.items()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
