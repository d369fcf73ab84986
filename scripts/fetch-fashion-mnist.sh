#!/usr/bin/env bash
# Fetches Fashion-MNIST (MIT, Zalando Research) from Debian's package `dataset-fashion-mnist`
# into DEST (default: data/fashion-mnist) and checks the sha256 of every file.
# Usage: scripts/fetch-fashion-mnist.sh [DEST]
set -euo pipefail
dest=${1:-data/fashion-mnist}
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download dataset-fashion-mnist >/dev/null)
dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/x"
cp "$work"/x/usr/share/datasets/fashion-mnist/*-ubyte.gz "$dest/"
cd "$dest"
sha256sum -c <<'SUMS'
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
SUMS
echo "Fashion-MNIST is in $dest: run  selfsup pretrain --config configs/fashion-mnist-simclr.toml --data idx:$dest"
