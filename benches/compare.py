#!/usr/bin/env python3
"""Joins the JSON of `selfsup bench` and of `benches/reference/bench.py` into one table.

    compare.py SELFSUP.json PYTORCH.json [--burn SELFSUP_BURN_OPS.json] [--markdown BENCHMARKS.md]

Prints the table; with --markdown, replaces the part of that file between
`<!-- bench:begin -->` and `<!-- bench:end -->` with it. Ratios are selfsup / PyTorch in
throughput (for lines in seconds: PyTorch seconds / selfsup seconds), so > 1 means selfsup is
faster. The GEMM peak of the machine is the best of the two `gemm` lines; a step's share of it is
its FLOPs / median seconds / peak. `--burn` adds the selfsup figures measured with
`SELFSUP_BURN_OPS=1` (Burn's own convolution and batch norm), to show what our kernels moved.
Only the standard library is used.
"""

import argparse
import json
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def load(path):
    with open(path) as f:
        doc = json.load(f)
    return doc, {line["id"]: line for line in doc["lines"]}


def throughput_ratio(ours, theirs):
    if ours.get("value") is None or theirs.get("value") is None:
        return None
    if ours["unit"] == "s":
        return theirs["value"] / ours["value"]
    return ours["value"] / theirs["value"]


def fmt(line):
    if line is None:
        return "–"
    if line.get("skipped"):
        return "skipped"
    v = line.get("value")
    if v is None:
        return "–"
    unit = line["unit"]
    if unit == "s":
        return f"{v:.2f} s"
    if v >= 1000:
        return f"{v:,.0f} {unit}"
    return f"{v:.1f} {unit}"


def share(line, peak):
    if not line or not peak or line.get("flops") is None or not line.get("median_s"):
        return None
    return 100.0 * line["flops"] / line["median_s"] / 1e9 / peak


def pct(x):
    return "–" if x is None else f"{x:.0f} %"


def rss(line, base_key=None):
    if not line or line.get("peak_rss_mb") is None:
        return "–"
    v = line["peak_rss_mb"]
    if base_key and line.get(base_key) is not None:
        v -= line[base_key]
    return f"{v:,.0f} MB"


def extra(ours, theirs):
    """Line-specific figures worth a note (accuracy, data wait)."""
    notes = []
    if ours and ours["id"] == "loader-step" and not ours.get("skipped"):
        notes.append(
            f"selfsup waits {100 * ours['wait_share']:.1f} % of the time "
            f"(step alone {ours['step_img_per_s']:.0f} img/s)"
        )
        if theirs and theirs.get("wait_share") is not None:
            notes.append(
                f"PyTorch {100 * theirs['wait_share']:.1f} % "
                f"(step alone {theirs['step_img_per_s']:.0f} img/s)"
            )
    if ours and ours["id"] in ("knn", "linear"):
        a = ours.get("top1")
        b = theirs.get("accuracy") if theirs else None
        if a is not None:
            notes.append(f"top-1 {a:.1f} %" + (f" vs {b:.1f} %" if b is not None else ""))
    if ours and ours["id"].startswith("aug") and theirs:
        per = "per core" if ours["id"].endswith("1core") else "all cores"
        notes.append(per)
    return "; ".join(notes)


def table(sdoc, s, pdoc, p, burn=None):
    peak = max(
        (d["gemm"]["value"] for d in (s, p) if "gemm" in d and d["gemm"].get("value")),
        default=None,
    )
    head = ["line", "what", "selfsup", "PyTorch", "selfsup / PyTorch"]
    if burn:
        head.insert(3, "selfsup, Burn ops")
    head += ["GEMM-peak share (selfsup / PyTorch)", "peak RSS (selfsup / PyTorch*)", "notes"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for id_ in s:
        ours, theirs = s[id_], p.get(id_)
        r = throughput_ratio(ours, theirs) if theirs else None
        cells = [
            f"`{id_}`",
            ours["what"],
            fmt(ours),
            fmt(theirs),
            "–" if r is None else f"**{r:.2f}×**",
        ]
        if burn:
            cells.insert(3, fmt(burn.get(id_)) if burn.get(id_) else "–")
        if id_ == "gemm":
            cells.append("(peak = " + (f"{peak:.0f} GFLOP/s" if peak else "?") + ")")
        else:
            cells.append(f"{pct(share(ours, peak))} / {pct(share(theirs, peak))}")
        cells.append(f"{rss(ours)} / {rss(theirs, 'rss_base_mb')}")
        cells.append(extra(ours, theirs))
        rows.append("| " + " | ".join(cells) + " |")
    info = (
        f"Measured {sdoc.get('date', '?')} on {sdoc.get('cpu', '?')}, {sdoc.get('threads')} threads: "
        f"{sdoc.get('version')} vs PyTorch {pdoc.get('version')} "
        f"({pdoc.get('threads')} threads). *PyTorch's peak RSS is counted above the "
        f"~{p.get('gemm', {}).get('rss_base_mb', 0):.0f} MB that importing torch maps."
    )
    return info + "\n\n" + "\n".join(rows) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("selfsup")
    ap.add_argument("pytorch")
    ap.add_argument("--burn", help="selfsup JSON measured with SELFSUP_BURN_OPS=1")
    ap.add_argument("--markdown", help="file whose bench:begin/end block is replaced")
    a = ap.parse_args()
    sdoc, s = load(a.selfsup)
    pdoc, p = load(a.pytorch)
    burn = load(a.burn)[1] if a.burn else None
    out = table(sdoc, s, pdoc, p, burn)
    print(out)
    if a.markdown:
        text = open(a.markdown).read()
        if BEGIN not in text or END not in text:
            sys.exit(f"{a.markdown}: no {BEGIN} … {END} block to replace")
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        with open(a.markdown + ".tmp", "w") as f:
            f.write(pre + BEGIN + "\n" + out + END + post)
        import os

        os.replace(a.markdown + ".tmp", a.markdown)
        print(f"updated {a.markdown}")


if __name__ == "__main__":
    main()
