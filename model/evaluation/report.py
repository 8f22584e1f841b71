"""What `fd2talk-eval` reports: each metric summarised over the videos, the paper's Table 1
layout with its FD2Talk row beside ours, and the files eval.json (settings, versions, the
weights files and their sha256, the summary, every row), eval.csv (a row per video) and
eval.png (`figure.py`).
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np

from fd2talk.model.evaluation import metrics as M

# (key, column header, higher is better, the paper's FD2Talk row: HDTF / VoxCeleb), in the
# paper's Table 1 order, then the offline metrics it does not report
COLUMNS = (
    ("lse_c", "LSE-C ^", True, "7.29 / 5.16"),
    (
        "lse_d",
        "LSE-D v",
        False,
        "-",
    ),  # the paper's "SyncNet" column is not LSE-D (docs/evaluation.md)
    ("diversity_hopenet", "Diversity ^", True, "0.338 / 0.359"),
    ("beat_align_hopenet", "Beat Align ^", True, "0.336 / 0.377"),
    ("fid", "FID v", False, "20.96 / 21.89"),
    ("diversity_coeffs", "Div.(coef) ^", True, "-"),
    ("diversity_lmk", "Div.(lmk) ^", True, "-"),
    ("beat_align_coeffs", "BA(coef) ^", True, "-"),
    ("beat_align_lmk", "BA(lmk) ^", True, "-"),
    ("psnr", "PSNR ^", True, "38.89 / 39.95"),
    ("ssim", "SSIM ^", True, "0.779 / 0.756"),
    ("lmd", "LMD v", False, "-"),
    ("jaw_r_true", "jaw r(gt) ^", True, "-"),
    ("jaw_r_speech", "jaw r(speech) ^", True, "-"),
)
PAPER_ONLY = {"SyncNet ^": "6.63 / 5.66"}  # a sync score we cannot identify (docs/evaluation.md)


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per metric: mean, std over videos (nan-ignoring) and how many videos have it; FID is
    one number over all frames of all videos (generated against ground truth)."""
    out = {}
    feats = [r["_fid"] for r in rows if "_fid" in r]
    if feats:
        gen, ref = np.concatenate([g for g, _ in feats]), np.concatenate([r for _, r in feats])
        try:
            out["fid"] = {
                "mean": M.fid(gen, ref),
                "std": float("nan"),
                "videos": len(feats),
                "frames": int(len(gen)),
            }
        except ValueError as e:  # too few frames, or sqrtm failed: the rest still stands
            out["fid_error"] = {"error": str(e), "videos": len(feats)}
    keys = [k for k, *_ in COLUMNS] + ["face_rate", "av_offset"]
    for k in keys:
        v = np.array([r[k] for r in rows if isinstance(r.get(k), (int, float))], np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            out[k] = {"mean": float(v.mean()), "std": float(v.std()), "videos": int(len(v))}
    return out


def table(summary: dict, unavailable: dict[str, str], label: str = "fd2talk (this run)") -> str:
    """Table 1's layout: our row beside the paper's FD2Talk row (HDTF / VoxCeleb)."""
    heads = [h for _, h, _, _ in COLUMNS]
    ours = []
    for k, _, _, _ in COLUMNS:
        s = summary.get(k)
        ours.append(
            "n/a"
            if s is None
            else f"{s['mean']:.3f}"
            if abs(s["mean"]) < 10
            else f"{s['mean']:.2f}"
        )
    paper = [p for *_, p in COLUMNS]
    width = [max(len(h), len(a), len(b)) for h, a, b in zip(heads, ours, paper, strict=True)]
    name_w = max(len(label), len("FD2Talk (paper)"))

    def line(name, cells):
        return f"{name:<{name_w}}  " + "  ".join(
            f"{c:>{w}}" for c, w in zip(cells, width, strict=True)
        )

    lines = [line("", heads), line(label, ours), line("FD2Talk (paper)", paper)]
    lines.append(
        "paper only (a protocol we cannot identify): "
        + ", ".join(f"{k} {v}" for k, v in PAPER_ONLY.items())
    )
    lines += [f"unavailable: {v}" for v in unavailable.values()]
    return "\n".join(lines)


def write_report(
    out: Path,
    rows: list[dict],
    summary: dict,
    settings: dict,
    unavailable: dict[str, str],
    weights: dict | None = None,
) -> dict[str, Path]:
    """eval.json (settings, versions, weights files and their sha256, summary, rows),
    eval.csv (a row per video) and eval.png (each metric's distribution over videos; mouth
    opening against speech)."""
    from fd2talk.core.atomic import atomic_path, json_default
    from fd2talk.model.evaluation.figure import figure

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "csv": out / "eval.csv", "png": out / "eval.png"}
    doc = {
        "settings": settings,
        "versions": versions(),
        "weights": weights,
        "unavailable": unavailable,
        "summary": summary,
    }
    rows_flat = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    doc["videos"] = rows_flat
    keys = sorted({k for r in rows_flat for k in r})
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, ["name"] + [k for k in keys if k != "name"])
        w.writeheader()
        w.writerows(rows_flat)
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=json_default, allow_nan=True))
    figure(paths["png"], rows, [(k, h) for k, h, _, _ in COLUMNS])
    return paths


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in (
        "fd2talk",
        "torch",
        "numpy",
        "scipy",
        "scikit-image",
        "mediapipe",
        "python_speech_features",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
