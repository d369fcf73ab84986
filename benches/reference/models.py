"""PyTorch re-implementations of selfsup's models, layer for layer.

Sources mirrored (crates/selfsup/src):
- backbone/resnet.rs   ResNet-18/34/50, CIFAR or ImageNet stem, width multiplier
- backbone/convnet.rs  ConvNet: conv3x3(no bias)-BN-ReLU stages, 2x2 max-pool rule, global avg pool
- heads.rs             projection head: [Linear(no bias) -> BN1d -> ReLU] x (layers-1) -> Linear(bias)
- loss/nt_xent.rs      NT-Xent, mean over the 2N rows
- method/simclr.rs     both views concatenated into one batch of 2N through encoder and head

Module attribute names follow the Rust struct field names, so that a torch state_dict key maps
onto Burn's module path by renaming BatchNorm's weight/bias to gamma/beta (see `burn_name`).
BatchNorm: eps 1e-5, momentum 0.1 (Burn's defaults, same update rule as torch for the mean).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _bn2d(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def _bn1d(c):
    return nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBn(nn.Module):
    """resnet.rs `ConvBn`: conv k x k, stride s, padding k/2, no bias; then BN."""

    def __init__(self, cin, cout, k, stride):
        super().__init__()
        p = k // 2
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=p, bias=False)
        self.norm = _bn2d(cout)

    def forward(self, x):
        return self.norm(self.conv(x))


class Block(nn.Module):
    """resnet.rs `Block`: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1); ReLU after every conv
    but the last, then relu(h + shortcut)."""

    def __init__(self, convs, shortcut):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.shortcut = shortcut  # ConvBn or None

    @staticmethod
    def basic(cin, cout, stride):
        sc = ConvBn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None
        return Block([ConvBn(cin, cout, 3, stride), ConvBn(cout, cout, 3, 1)], sc)

    @staticmethod
    def bottleneck(cin, width, stride):
        cout = width * 4
        sc = ConvBn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None
        return Block(
            [ConvBn(cin, width, 1, 1), ConvBn(width, width, 3, stride), ConvBn(width, cout, 1, 1)],
            sc,
        )

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut is not None else x
        h = x
        last = len(self.convs) - 1
        for i, c in enumerate(self.convs):
            h = c(h)
            if i < last:
                h = F.relu(h)
        return F.relu(h + identity)


def scaled_width(c, width):
    """`((c as f32 * width).round() as usize).max(1)`: f32 product, round half away from zero."""
    x = float(np.float32(c) * np.float32(width))
    return max(1, int(math.floor(x + 0.5)))


class ResNet(nn.Module):
    def __init__(self, depth=18, cifar_stem=True, width=1.0, in_channels=3):
        super().__init__()
        assert depth in (18, 34, 50)
        counts, bottleneck = {18: ([2, 2, 2, 2], False), 34: ([3, 4, 6, 3], False),
                              50: ([3, 4, 6, 3], True)}[depth]
        stem_c = scaled_width(64, width)
        if cifar_stem:
            self.stem = ConvBn(in_channels, stem_c, 3, 1)
            self.pool = None
        else:
            self.stem = ConvBn(in_channels, stem_c, 7, 2)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks = []
        cin = stem_c
        for stage, n in enumerate(counts):
            w = scaled_width(64 << stage, width)
            for b in range(n):
                stride = 2 if (stage > 0 and b == 0) else 1
                blocks.append(Block.bottleneck(cin, w, stride) if bottleneck
                              else Block.basic(cin, w, stride))
                cin = w * 4 if bottleneck else w
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = cin

    def forward(self, x):
        h = F.relu(self.stem(x))
        if self.pool is not None:
            h = self.pool(h)
        for b in self.blocks:
            h = b(h)
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


class ConvStage(nn.Module):
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = _bn2d(cout)
        self.pool = nn.MaxPool2d(2, stride=2) if pool else None

    def forward(self, x):
        h = F.relu(self.norm(self.conv(x)))
        if self.pool is not None:
            h = self.pool(h)
        return h


class ConvNet(nn.Module):
    """convnet.rs: stage i gets a 2x2/2 max-pool iff it is not the last and the map side is
    still >= 4 (the side is halved, floor, each time)."""

    def __init__(self, widths=(32, 64, 128), in_channels=1, image_size=28):
        super().__init__()
        stages = []
        cin, side, n = in_channels, image_size, len(widths)
        for i, c in enumerate(widths):
            pool = i + 1 < n and side >= 4
            if pool:
                side //= 2
            stages.append(ConvStage(cin, c, pool))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_dim = cin

    def forward(self, x):
        h = x
        for s in self.stages:
            h = s(h)
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


class ProjectionHead(nn.Module):
    """heads.rs: `hidden: Vec<(Linear, BatchNorm)>` then `out: Linear` (with bias)."""

    def __init__(self, in_dim, hidden_dim=512, out_dim=128, layers=2):
        super().__init__()
        layers = max(layers, 2)
        hidden = []
        d = in_dim
        for _ in range(layers - 1):
            hidden.append(nn.ModuleList([nn.Linear(d, hidden_dim, bias=False), _bn1d(hidden_dim)]))
            d = hidden_dim
        self.hidden = nn.ModuleList(hidden)
        self.out = nn.Linear(d, out_dim)

    def forward(self, x):
        h = x
        for lin, norm in self.hidden:
            h = F.relu(norm(lin(h)))
        return self.out(h)


def l2_normalize(x):
    """loss/nt_xent.rs `l2_normalize`: x / max(||x||, 1e-12) per row."""
    return x / x.square().sum(1, keepdim=True).sqrt().clamp_min(1e-12)


def nt_xent(z1, z2, temperature):
    """loss/nt_xent.rs, same operations: cat, normalise, logits / tau, diagonal filled with -1e9,
    log_softmax, gather the positive (i + N) mod 2N, mean over 2N rows, negated."""
    n = z1.shape[0]
    z = l2_normalize(torch.cat([z1, z2], 0))
    logits = (z @ z.t()) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, -1.0e9)
    pos = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    log_prob = F.log_softmax(logits, 1)
    return -log_prob.gather(1, pos.unsqueeze(1)).mean()


class SimClr(nn.Module):
    def __init__(self, encoder, head, temperature=0.5):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.temperature = temperature

    def loss(self, x):
        """`x`: the 2N views, view 1 of every image first, then view 2 (as `Tensor::cat`)."""
        n = x.shape[0] // 2
        z = self.head(self.encoder(x))
        return nt_xent(z[:n], z[n:], self.temperature)


# The three benchmark configurations (ids shared with the Rust side).
CONFIGS = {
    "step-a": dict(kind="resnet", width=1.0, channels=3, side=32, n=64),
    "step-b": dict(kind="resnet", width=0.5, channels=3, side=32, n=32),
    "step-c": dict(kind="convnet", widths=(32, 64, 128), channels=1, side=28, n=256),
}


def build(id_, hidden=512, out=128, temperature=0.5):
    cfg = CONFIGS[id_]
    if cfg["kind"] == "resnet":
        enc = ResNet(18, cifar_stem=True, width=cfg["width"], in_channels=cfg["channels"])
    else:
        enc = ConvNet(cfg["widths"], in_channels=cfg["channels"], image_size=cfg["side"])
    head = ProjectionHead(enc.out_dim, hidden, out, 2)
    return SimClr(enc, head, temperature)


def param_groups(model, weight_decay):
    """optim/optimizer.rs with `exclude_bias_norm = true`: no weight decay on 1-D parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def burn_name(model, torch_key):
    """Burn module path of a torch state_dict key (without any enum variant segment):
    BatchNorm weight/bias -> gamma/beta; everything else keeps its name. Returns None for
    torch-only buffers (num_batches_tracked)."""
    mod_path, _, leaf = torch_key.rpartition(".")
    if leaf == "num_batches_tracked":
        return None
    mod = model.get_submodule(mod_path)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        leaf = {"weight": "gamma", "bias": "beta"}.get(leaf, leaf)
    return f"{mod_path}.{leaf}"


def is_linear_weight(model, torch_key):
    mod_path, _, leaf = torch_key.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(mod_path), nn.Linear)
