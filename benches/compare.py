#!/usr/bin/env python3
"""Joins the JSON of `selfsup bench` and of `benches/reference/bench.py` into one table.

    compare.py SELFSUP.json PYTORCH.json [--burn SELFSUP_BURN_OPS.json] [--markdown BENCHMARKS.md]

Prints the table; with --markdown, replaces the part of that file between
`<!-- bench:begin -->` and `<!-- bench:end -->` with it. Ratios are selfsup / PyTorch in
throughput (for lines in seconds: PyTorch seconds / selfsup seconds), so > 1 means selfsup is
faster. The GEMM peak of the machine is the best of the two `gemm` lines; a step's share of it is
its FLOPs / median seconds / peak, with the FLOPs of direct convolutions (the *effective* share,
which may pass 100 % with Winograd); for selfsup the share of the FLOPs executed follows in
brackets where Winograd convolutions ran. `--burn` adds the selfsup figures measured with
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
    if ours.get("unit") == "s":
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
    unit = line.get("unit") or ""
    if unit == "s":
        return f"{v:.2f} s"
    if v >= 1000:
        return f"{v:,.0f} {unit}"
    return f"{v:.1f} {unit}"


def share(line, peak, key="flops"):
    if not line or not peak or line.get(key) is None or not line.get("median_s"):
        return None
    return 100.0 * line[key] / line["median_s"] / 1e9 / peak


def our_share(line, peak):
    """Effective share (direct-convolution FLOPs, as PyTorch counts them), and in brackets the
    share of the multiply-adds executed where Winograd convolutions ran (`executed_flops`)."""
    eff = pct(share(line, peak))
    ex = share(line, peak, "executed_flops")
    if ex is None or not line or line.get("executed_flops", 0) >= line.get("flops", 0):
        return eff
    return f"{eff} (executed {pct(ex)})"


def pct(x):
    return "–" if x is None else f"{x:.0f} %"


def peak_mb(line):
    """The line's peak RSS: the process's high-water mark, with its DataLoader workers' private
    memory when it had workers (`peak_rss_total_mb`)."""
    if not line:
        return None
    v = line.get("peak_rss_total_mb")
    return v if v is not None else line.get("peak_rss_mb")


def above_idle(line):
    """Peak RSS above the process's RSS when the line started (`rss_base_mb`), or None."""
    v = peak_mb(line)
    if v is None or line.get("rss_base_mb") is None:
        return None
    return v - line["rss_base_mb"]


def rss(line):
    """"1,235 MB (+1,200)": absolute peak and, when the line has `rss_base_mb`, the part above
    the idle process."""
    v = peak_mb(line)
    if v is None:
        return "–"
    up = above_idle(line)
    return f"{v:,.0f} MB" + ("" if up is None else f" (+{up:,.0f})")


def slowdown(line):
    """How much loading slows the step: 1 - (img/s with the loader) / (img/s of the step alone),
    clamped at 0. The with-loader rate is `with_loader_img_per_s` when the line has it (in
    loader-stream `value` is the loader alone), else `value`; a line without `step_img_per_s`
    falls back on its own `slowdown` field."""
    if not line or line.get("skipped"):
        return None
    with_loader = line.get("with_loader_img_per_s")
    if with_loader is None and line.get("id") == "loader-step":
        with_loader = line.get("value")
    alone = line.get("step_img_per_s")
    if with_loader is not None and alone:
        return max(0.0, 1.0 - with_loader / alone)
    for key in ("slowdown",):
        if line.get(key) is not None:
            return max(0.0, line[key])
    return None


def loader_note(ours, theirs):
    """Slowdown of the step by loading, both sides (and the step alone in img/s)."""
    parts = []
    for name, line in (("selfsup", ours), ("PyTorch", theirs)):
        sd = slowdown(line)
        if sd is None:
            continue
        alone = line.get("step_img_per_s")
        parts.append(f"{name} {100 * sd:.1f} %"
                     + (f" (step alone {alone:,.0f} img/s)" if alone else ""))
    return ("step slowed by loading: " + ", ".join(parts)) if parts else ""


def extra(ours, theirs):
    """Line-specific figures worth a note (accuracy, loading slowdown, memory above idle)."""
    notes = []
    line = ours or theirs or {}
    id_ = line.get("id", "")
    if id_ in ("loader-step", "loader-stream"):
        n = loader_note(ours, theirs)
        if n:
            notes.append(n)
    if id_ == "loader-stream":
        ups = [f"{name} +{above_idle(l):,.0f} MB" for name, l in (("selfsup", ours),
               ("PyTorch", theirs)) if l and not l.get("skipped") and above_idle(l) is not None]
        if ups:
            notes.append("peak RSS above idle: " + ", ".join(ups))
    if id_ in ("knn", "linear"):
        a = ours.get("top1") if ours else None
        b = theirs.get("accuracy") if theirs else None
        if a is not None:
            notes.append(f"top-1 {a:.1f} %" + (f" vs {b:.1f} %" if b is not None else ""))
    if id_.startswith("aug") and ours and theirs:
        per = "per core" if id_.endswith("1core") else "all cores"
        notes.append(per)
    if theirs and theirs.get("variant") and theirs.get("variant") != "eager":
        notes.append(f"PyTorch {theirs['variant'].replace('_', ' ')}")
    return "; ".join(notes)


def table(sdoc, s, pdoc, p, burn=None):
    peak = max(
        (d["gemm"]["value"] for d in (s, p) if "gemm" in d and d["gemm"].get("value")),
        default=None,
    )
    head = ["line", "what", "selfsup", "PyTorch", "selfsup / PyTorch"]
    if burn:
        head.insert(3, "selfsup, Burn ops")
    head += ["GEMM-peak share (selfsup / PyTorch)", "peak RSS (+ above idle) (selfsup / PyTorch)",
             "notes"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # selfsup's lines in its order, then any line only PyTorch has
    for id_ in list(s) + [i for i in p if i not in s]:
        ours, theirs = s.get(id_), p.get(id_)
        r = throughput_ratio(ours, theirs) if ours and theirs else None
        cells = [
            f"`{id_}`",
            (ours or theirs).get("what", ""),
            fmt(ours),
            fmt(theirs),
            "–" if r is None else f"**{r:.2f}×**",
        ]
        if burn:
            cells.insert(3, fmt(burn.get(id_)) if burn.get(id_) else "–")
        if id_ == "gemm":
            cells.append("(peak = " + (f"{peak:.0f} GFLOP/s" if peak else "?") + ")")
        else:
            cells.append(f"{our_share(ours, peak)} / {pct(share(theirs, peak))}")
        cells.append(f"{rss(ours)} / {rss(theirs)}")
        cells.append(extra(ours, theirs))
        rows.append("| " + " | ".join(cells) + " |")
    bases = [l["rss_base_mb"] for l in p.values() if l.get("rss_base_mb") is not None]
    base = (p.get("gemm") or {}).get("rss_base_mb") or (min(bases) if bases else None)
    info = (
        f"Measured {sdoc.get('date', '?')} on {sdoc.get('cpu', '?')}, {sdoc.get('threads')} threads: "
        f"{sdoc.get('version')} vs PyTorch {pdoc.get('version')} "
        f"({pdoc.get('threads')} threads). PyTorch's steps are the fastest of the variants it "
        f"tried (`variant` in its JSON). Peak RSS is each line's high-water mark, DataLoader "
        f"workers' private memory included; in brackets the part above the process's RSS when "
        f"the line started (for PyTorch that idle process already holds "
        + (f"~{base:,.0f} MB, mostly" if base is not None else "the memory")
        + " what importing torch maps)."
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
