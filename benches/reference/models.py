"""PyTorch re-implementations of selfsup's models, layer for layer.

Sources mirrored (crates/selfsup/src):
- backbone/resnet.rs   ResNet-18/34/50, CIFAR or ImageNet stem, width multiplier
- backbone/convnet.rs  ConvNet: conv3x3(no bias)-BN-ReLU stages, 2x2 max-pool rule, global avg pool
- heads.rs             projection head: [Linear(no bias) -> BN1d -> ReLU] x (layers-1) -> Linear(bias)
- loss/nt_xent.rs      NT-Xent, mean over the 2N rows
- method/simclr.rs     both views concatenated into one batch of 2N through encoder and head
- backbone/vit.rs      ViT: patchify (channel, row, col) within row-major patches, patch embedding
                       as a Linear, class token, fixed 2-D sin-cos positions, final LayerNorm
- backbone/transformer.rs  pre-norm Block (norm1, attn{qkv, proj}, norm2, mlp{fc1, fc2}), exact
                       GELU, softmax attention scaled by dh^-0.5, `sincos_2d`, LayerNorm eps 1e-6
- method/mae.rs        MAE: encoder on the visible patches, decoder, norm-pix target (unbiased
- loss/mse.rs          variance, +1e-6), mean over the masked patches of the per-patch MSE

Module attribute names follow the Rust struct field names, so that a torch state_dict key maps
onto Burn's module path by renaming BatchNorm's and LayerNorm's weight/bias to gamma/beta (see
`burn_name`). BatchNorm: eps 1e-5, momentum 0.1 (Burn's defaults, same update rule as torch for
the mean).
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


# ---------------------------------------------------------------------------------------------
# ViT and MAE (backbone/vit.rs, backbone/transformer.rs, method/mae.rs, loss/mse.rs)

LN_EPS = 1e-6


def _ln(d):
    return nn.LayerNorm(d, eps=LN_EPS)


def sincos_2d(gh, gw, dim):
    """transformer.rs `sincos_2d`: (gh*gw, dim), row-major over the grid; first half of the
    channels the column, second half the row, each [sin(p w_i), cos(p w_i)],
    w_i = 10000^(-i/(dim/4)); computed in float64, rounded to float32 (as the Rust side)."""
    q = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(q, dtype=np.float64) / q)
    out = np.empty((gh * gw, dim), dtype=np.float64)
    for r in range(gh):
        for c in range(gw):
            row = []
            for pos in (float(c), float(r)):
                row.append(np.sin(pos * omega))
                row.append(np.cos(pos * omega))
            out[r * gw + c] = np.concatenate(row)
    return torch.from_numpy(out.astype(np.float32))


def positions_with_cls(gh, gw, dim):
    """(1, 1+L, dim): a zero row for the class token, then `sincos_2d` (vit.rs `positions`)."""
    return torch.cat([torch.zeros(1, dim), sincos_2d(gh, gw, dim)], 0).unsqueeze(0)


class Attention(nn.Module):
    """transformer.rs `Attention`: qkv in one Linear, (N, L, 3d) -> (3, N, h, L, dh), softmax
    of q k^T * dh^-0.5, proj. `use_sdpa`: the same math through F.scaled_dot_product_attention
    (fused kernel); False: explicit matmul / softmax / matmul (what FlopCounterMode always sees
    as two bmm)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.use_sdpa = True

    def forward(self, x):
        n, l, d = x.shape
        h = self.heads
        dh = d // h
        qkv = self.qkv(x).reshape(n, l, 3, h, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        causal = getattr(self, "causal", False)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=dh ** -0.5, is_causal=causal)
        else:
            s = (q @ k.transpose(-2, -1)) * dh ** -0.5
            if causal:
                s = s.masked_fill(torch.ones(l, l, dtype=torch.bool).triu(1), float("-inf"))
            attn = torch.softmax(s, dim=-1)
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(n, l, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class TransformerBlock(nn.Module):
    """transformer.rs `Block` (pre-norm): x + proj(attn(LN1 x)); x + fc2(GELU(fc1(LN2 x)))."""

    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        hidden = int(math.floor(float(np.float32(dim) * np.float32(mlp_ratio)) + 0.5))
        self.norm1 = _ln(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = _ln(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Vit(nn.Module):
    """vit.rs `Vit` with fixed sin-cos positions (no `pos_embed` parameter)."""

    def __init__(self, dim=128, depth=6, heads=4, mlp_ratio=4.0, patch=4, channels=3,
                 image_size=32):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.grid = image_size // patch
        self.dim = dim
        self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = _ln(dim)
        self.register_buffer("pos", positions_with_cls(self.grid, self.grid, dim),
                             persistent=False)
        self.out_dim = dim

    @property
    def num_patches(self):
        return self.grid * self.grid

    def patchify(self, x):
        """(N, C, H, W) -> (N, L, C*p*p): row-major patches, each (channel, row, col)."""
        n = x.shape[0]
        p, c, g = self.patch, self.channels, self.grid
        return x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c * p * p)

    def forward_visible(self, x, ids_keep):
        """vit.rs `forward_visible`: (N, 1+K, d), class token first."""
        n = x.shape[0]
        tokens = self.patch_embed(self.patchify(x)) + self.pos[:, 1:]
        cls = (self.cls_token + self.pos[:, :1]).expand(n, -1, -1)
        k = ids_keep.shape[1]
        visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(n, k, self.dim))
        t = torch.cat([cls, visible], 1)
        for b in self.blocks:
            t = b(t)
        return self.norm(t)


def random_masking(n, num, keep, device=None, generator=None):
    """MAE's reference masking: argsort of uniform noise per sample. Returns (ids_keep (N, K),
    ids_restore (N, L)), int64."""
    noise = torch.rand(n, num, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :keep], ids_restore


def visible_count(num, ratio):
    """masking.rs `visible_count`: floor(L (1 - ratio)) in f64 of the f32 ratio, in [1, L]."""
    return min(max(int(math.floor(num * (1.0 - float(np.float32(ratio))))), 1), num)


class Mae(nn.Module):
    """method/mae.rs `Mae`."""

    def __init__(self, encoder, decoder_dim=64, decoder_depth=2, decoder_heads=4,
                 mask_ratio=0.75, norm_pix_loss=True):
        super().__init__()
        self.encoder = encoder
        dd = decoder_dim
        pdim = encoder.channels * encoder.patch * encoder.patch
        self.decoder_embed = nn.Linear(encoder.out_dim, dd)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dd) * 0.02)
        self.decoder_blocks = nn.ModuleList(TransformerBlock(dd, decoder_heads, 4.0)
                                            for _ in range(decoder_depth))
        self.decoder_norm = _ln(dd)
        self.decoder_pred = nn.Linear(dd, pdim)
        self.register_buffer("decoder_pos", positions_with_cls(encoder.grid, encoder.grid, dd),
                             persistent=False)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.keep = visible_count(encoder.num_patches, mask_ratio)
        # transformer.rs `xavier_linear` (and MAE's reference code): Xavier-uniform weights,
        # zero biases; LayerNorms (1, 0) and tokens N(0, 0.02^2) are already so
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def masks(self, n, generator=None):
        return random_masking(n, self.encoder.num_patches, self.keep, self.mask_token.device,
                              generator)

    def target(self, x):
        """loss/mse.rs `mae_target`: per-patch (t - mean) / sqrt(unbiased var + 1e-6)."""
        patches = self.encoder.patchify(x)
        if not self.norm_pix_loss:
            return patches
        mean = patches.mean(-1, keepdim=True)
        var = patches.var(-1, keepdim=True, unbiased=True)
        return (patches - mean) / (var + 1e-6).sqrt()

    def loss(self, x, ids_keep=None, ids_restore=None):
        """The step's loss; without masks, draws them (torch RNG) as MAE's reference code."""
        if ids_keep is None:
            ids_keep, ids_restore = self.masks(x.shape[0])
        n, l = ids_restore.shape
        k = ids_keep.shape[1]
        latent = self.encoder.forward_visible(x, ids_keep)
        y = self.decoder_embed(latent)
        dd = y.shape[2]
        tokens = torch.cat([y[:, 1:], self.mask_token.expand(n, l - k, dd)], 1)
        tokens = tokens.gather(1, ids_restore.unsqueeze(-1).expand(n, l, dd))
        t = torch.cat([y[:, :1], tokens], 1) + self.decoder_pos
        for b in self.decoder_blocks:
            t = b(t)
        pred = self.decoder_pred(self.decoder_norm(t))[:, 1:]
        target = self.target(x)
        mask = (ids_restore >= k).to(pred.dtype)     # 1 for a hidden patch
        per_patch = (pred - target).square().mean(-1)
        return (per_patch * mask).sum() / mask.sum()


class TextTransformer(nn.Module):
    """backbone/text.rs `TextTransformer`: token embedding + learned positions, pre-norm blocks
    (bidirectional, or causal through SDPA's is_causal), final LayerNorm."""

    def __init__(self, vocab, dim, depth, heads, max_len, causal, mlp_ratio=4.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        for b in self.blocks:
            b.attn.causal = causal
        self.norm = _ln(dim)

    def forward(self, ids):
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


class Gpt(nn.Module):
    """method/gpt.rs: windows of L + 1 tokens, causal encoder on the first L, untied head,
    cross-entropy against the next tokens."""

    def __init__(self, vocab, dim, depth, heads, max_len):
        super().__init__()
        self.encoder = TextTransformer(vocab, dim, depth, heads, max_len, causal=True)
        self.head = nn.Linear(dim, vocab)

    def loss(self, windows):
        x, y = windows[:, :-1], windows[:, 1:]
        logits = self.head(self.encoder(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class Mlm(nn.Module):
    """method/mlm.rs: BERT masking (15 %: 80 % [MASK] = 4, 10 % a random token, 10 % kept),
    bidirectional encoder, head dense -> GELU -> LayerNorm -> decoder on the selected rows."""

    def __init__(self, vocab, dim, depth, heads, max_len, rate=0.15):
        super().__init__()
        self.encoder = TextTransformer(vocab, dim, depth, heads, max_len, causal=False)
        self.dense = nn.Linear(dim, dim)
        self.norm = _ln(dim)
        self.decoder = nn.Linear(dim, vocab)
        self.vocab, self.rate = vocab, rate

    def masking(self, ids, generator=None):
        """(the encoder's input, targets: the original id where selected, -1 elsewhere)."""
        sel = torch.rand(ids.shape, generator=generator) < self.rate
        u = torch.rand(ids.shape, generator=generator)
        rnd = torch.randint(5, self.vocab, ids.shape, generator=generator)
        inp = torch.where(sel & (u < 0.8), torch.full_like(ids, 4), ids)
        inp = torch.where(sel & (u >= 0.8) & (u < 0.9), rnd, inp)
        return inp, torch.where(sel, ids, torch.full_like(ids, -1))

    def loss_given(self, inp, targets):
        """The loss of a given masking (selected rows in row-major order, as mlm.rs)."""
        sel = targets >= 0
        h = self.encoder(inp)[sel]
        logits = self.decoder(self.norm(F.gelu(self.dense(h), approximate="none")))
        return F.cross_entropy(logits, targets[sel])

    def loss(self, ids, generator=None):
        return self.loss_given(*self.masking(ids, generator))


def set_sdpa(model, on):
    """Attention through F.scaled_dot_product_attention (on) or explicit matmuls (off)."""
    for m in model.modules():
        if isinstance(m, Attention):
            m.use_sdpa = on
    return model


# The benchmark configurations (ids shared with the Rust side).
CONFIGS = {
    "step-a": dict(kind="resnet", width=1.0, channels=3, side=32, n=64),
    "step-b": dict(kind="resnet", width=0.5, channels=3, side=32, n=32),
    "step-c": dict(kind="convnet", widths=(32, 64, 128), channels=1, side=28, n=256),
    # bench/steps.rs `vit_step_recipe`: ViT mini, patch 4; MAE decoder 64-d, 2 blocks, 4 heads
    "step-vit": dict(kind="mae", dim=128, depth=6, heads=4, mlp_ratio=4.0, patch=4,
                     decoder_dim=64, decoder_depth=2, decoder_heads=4, mask_ratio=0.75,
                     channels=3, side=32, n=64),
    # bench/steps.rs `text_step_recipe`: nanoGPT's CPU configuration (character vocabulary of
    # Tiny Shakespeare: 65 characters + 5 special tokens), and a BERT-style MLM on a
    # 4,000-token BPE vocabulary
    "step-gpt": dict(kind="gpt", vocab=70, dim=128, depth=4, heads=4, seq=64, n=12),
    "step-mlm": dict(kind="mlm", vocab=4000, dim=128, depth=4, heads=4, seq=64, n=64),
}


def build(id_, hidden=512, out=128, temperature=0.5):
    cfg = CONFIGS[id_]
    if cfg["kind"] == "gpt":
        return Gpt(cfg["vocab"], cfg["dim"], cfg["depth"], cfg["heads"], cfg["seq"])
    if cfg["kind"] == "mlm":
        return Mlm(cfg["vocab"], cfg["dim"], cfg["depth"], cfg["heads"], cfg["seq"])
    if cfg["kind"] == "mae":
        vit = Vit(cfg["dim"], cfg["depth"], cfg["heads"], cfg["mlp_ratio"], cfg["patch"],
                  cfg["channels"], cfg["side"])
        return Mae(vit, cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_heads"],
                   cfg["mask_ratio"], norm_pix_loss=True)
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
    BatchNorm and LayerNorm weight/bias -> gamma/beta; everything else keeps its name. Returns
    None for torch-only buffers (num_batches_tracked)."""
    mod_path, _, leaf = torch_key.rpartition(".")
    if leaf == "num_batches_tracked":
        return None
    mod = model.get_submodule(mod_path)
    if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
        leaf = {"weight": "gamma", "bias": "beta"}.get(leaf, leaf)
    return f"{mod_path}.{leaf}" if mod_path else leaf


def is_linear_weight(model, torch_key):
    mod_path, _, leaf = torch_key.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(mod_path), nn.Linear)
