#!/usr/bin/env python3
"""A selfsup ResNet (ViT) encoder in torchvision (timm), and torchvision weights back into selfsup.

    python torchvision_roundtrip.py EXPORT.safetensors [--torch-out TORCH.safetensors]
    python torchvision_roundtrip.py EXPORT.safetensors --weights TORCH.safetensors

EXPORT.safetensors is written by `selfsup export --run RUN --format torchvision --out
EXPORT.safetensors`, beside EXPORT.safetensors.check.safetensors (`inputs`: test images as the
encoder sees them, `features`: selfsup's features of them).

1. Export: builds `torchvision.models.resnet{depth}` (weights=None) with the stem changes the
   file's metadata asks for (`cifar_stem`: conv1 a 3×3 stride-1 convolution, maxpool Identity;
   `in_channels` other than 3: conv1 with that many input channels) and `fc = Identity`, loads
   the file with strict=False, checks that only the `num_batches_tracked` counters are missing
   and nothing is unexpected, and compares torchvision's features in eval mode with selfsup's
   on the same inputs. A ViT exported with `--format timm` goes the same way into timm's
   `VisionTransformer` built with the file's sizes (`num_classes=0`, `fc_norm=False`,
   `global_pool` the run's pooling): nothing may be missing or unexpected.
2. Import: with --torch-out, writes torchvision's own `state_dict()` of that model (counters
   included, and a 10-class `fc` put back, as an ImageNet checkpoint has) with
   `safetensors.torch.save_file`, for `selfsup pretrain --init-from torchvision:TORCH.safetensors`.
3. Import check: with --weights TORCH.safetensors, torchvision's model is loaded from that file
   (torchvision's own state dict; `fc` dropped) instead of from EXPORT, and its features are
   compared with those in EXPORT's check file. Run it on the export of a run started from that
   file and stopped before its first step:

       selfsup pretrain -c R.toml --init-from torchvision:TORCH.safetensors --stop-after 0 --out B
       selfsup export --run B --out B.safetensors
       python torchvision_roundtrip.py B.safetensors --weights TORCH.safetensors

Exit status 1 when the relative difference of the features exceeds 1e-4 or a key does not fit.
"""

import argparse
import json
import sys

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def build(meta):
    depth = int(meta["depth"])
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    cin = int(meta["in_channels"])
    if meta["cifar_stem"] == "true":
        model.conv1 = torch.nn.Conv2d(cin, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    elif cin != 3:
        model.conv1 = torch.nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
    return model


def build_timm(meta):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(
        img_size=int(meta["img_size"]), patch_size=int(meta["patch_size"]),
        in_chans=int(meta["in_chans"]), num_classes=0, global_pool=meta["global_pool"],
        embed_dim=int(meta["embed_dim"]), depth=int(meta["depth"]),
        num_heads=int(meta["num_heads"]), mlp_ratio=float(meta["mlp_ratio"]),
        qkv_bias=True, class_token=True, fc_norm=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("--torch-out")
    ap.add_argument("--weights")
    a = ap.parse_args()
    with safe_open(a.export, "pt") as f:
        meta = f.metadata()
    vit = meta["format"].startswith("timm")
    if vit:
        model = build_timm(meta)
    else:
        model = build(meta)
        fc = model.fc
        model.fc = torch.nn.Identity()
    sd = load_file(a.weights or a.export)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    res = model.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    ok = not missing and not res.unexpected_keys
    check = load_file(a.export + ".check.safetensors")
    model.eval()
    with torch.no_grad():
        ours = check["features"].double()
        theirs = model(check["inputs"]).double()
    diff = (ours - theirs).abs().max().item()
    rel = diff / ours.abs().max().item()
    ok = ok and rel <= 1e-4
    print(json.dumps({
        "weights": a.weights or a.export,
        "model": f"timm vit {meta['embed_dim']}-d x{meta['depth']}" if vit else f"resnet{meta['depth']}",
        "stem": None if vit else meta["cifar_stem"], "tensors": len(sd),
        "missing_besides_counters": missing, "unexpected": res.unexpected_keys,
        "images": check["inputs"].shape[0], "features": check["features"].shape[1],
        "max_abs_diff": diff, "max_abs_feature": ours.abs().max().item(), "relative": rel,
        "torch": torch.__version__, "torchvision": torchvision.__version__,
    }, indent=1))
    if a.torch_out and not vit:
        model.fc = torch.nn.Linear(fc.in_features, 10)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.torch_out)
        print(f"wrote torchvision's state dict to {a.torch_out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
