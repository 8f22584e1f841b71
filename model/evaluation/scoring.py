"""`fd2talk-eval`: score talking-head videos (fd2talk's or any other method's) with the metrics
of `metrics.py`, and run the paper's protocol on a model's test split.

Every video is read at 25 fps (ffmpeg's fps filter: another method's 30 fps video is
resampled as its player would show it). A generated video is compared with its ground truth
at the ground truth's resolution (the generated frames are resized to it with area
filtering), over the frames both have. The speech is the generated video's own audio track,
else the ground truth's. MediaPipe's landmarker (the install's face model) reads every video
once: its landmarks give LMD, its jawOpen the mouth sync, its head pose the landmark
diversity and beat align, which need no third-party weights. A `NAME.npz` with `pose` beside
a generated video (`fd2talk-generate --save-coeffs`) also gives both from the motion itself.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.model.evaluation import metrics as M

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
READ_TIMEOUT = 600.0

# (key, column header, higher is better, the paper's FD2Talk row: HDTF / VoxCeleb), in the
# paper's Table 1 order, then the offline metrics it does not report
COLUMNS = (
    ("lse_c", "LSE-C ^", True, "7.29 / 5.16"),
    ("lse_d", "LSE-D v", False, "-"),  # the paper's "SyncNet" column is not LSE-D (README)
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
PAPER_ONLY = {"SyncNet ^": "6.63 / 5.66"}  # a sync score we cannot identify (README)


@dataclass
class Tools:
    """What scoring needs, loaded once: the landmarker's face model and SyncNet (or why it is
    unavailable)."""

    face_model: str | None = None
    device: str = "cpu"
    syncnet: object | None = None
    hopenet: object | None = None
    inception: object | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    weights: dict[str, dict] = field(default_factory=dict)  # name -> path, sha256 (the JSON's)
    paths: dict[str, str | None] = field(default_factory=dict)  # as given (for workers)

    @classmethod
    def load(cls, syncnet: str | None = None, face_model: str | None = None,
             device: str = "cpu", hopenet: str | None = None,
             inception: str | None = None) -> Tools:
        from fd2talk.model.evaluation import nets as N
        from fd2talk.pipeline.backends.weights import sha256 as file_sha256

        tools = cls(face_model=face_model, device=device)
        tools.paths = {"syncnet": syncnet, "hopenet": hopenet, "inception": inception}
        envs = {"syncnet": N.SYNCNET_ENV, "hopenet": N.HOPENET_ENV,
                "inception": N.INCEPTION_ENV}
        for name, loader in (("syncnet", N.load_syncnet), ("hopenet", N.load_hopenet),
                             ("inception", N.load_inception)):
            try:
                setattr(tools, name, loader(tools.paths[name], device))
            except N.Unavailable as e:
                tools.unavailable[name] = str(e)
                continue
            path = Path(tools.paths[name] or os.environ[envs[name]])
            tools.weights[name] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
        return tools


def read_video(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB at 25 fps, at `size` (width, height) or the video's own."""
    from fd2talk.core import media
    from fd2talk.core.skip import Skip

    try:
        if size is None:
            p = media.probe(path, need_audio=False)
            size = (p.width, p.height)
        return np.stack(list(media.iter_frames(path, size[0], size[1], READ_TIMEOUT, [("fps", 25)])))
    except Skip as e:
        raise UserError(f"cannot read {path} as a video: {e.detail}") from None
    except ValueError:
        raise UserError(f"{path} has no video frames") from None


def _speech(*paths: Path | None) -> np.ndarray | None:
    from fd2talk.core.media_io import audio_streams, read_speech

    for p in paths:
        if p is not None and audio_streams(p) > 0:
            return read_speech(p)
    return None


def _landmarks(frames: np.ndarray, face_model: str | None) -> dict:
    from fd2talk.model.generation.pipeline import _coeffs_stage

    stage = _coeffs_stage("mediapipe", face_model)
    try:
        return stage.coefficients(frames)
    finally:
        stage.close()


def _head(pose: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(F, 3) yaw/pitch/roll-like rotation angles in degrees (nan where no face)."""
    angles = np.degrees(np.asarray(pose, np.float64)[:, :3])
    if valid is not None:
        angles[~valid] = np.nan
    return angles


def _motion_metrics(angles: np.ndarray, onsets: np.ndarray | None, tag: str) -> dict:
    ok = np.isfinite(angles).all(1)
    out = {f"diversity_{tag}": M.diversity(angles)}
    if onsets is not None:
        filled = angles.copy()  # frames without a face take their neighbour's pose
        if ok.any() and not ok.all():
            idx = np.flatnonzero(ok)
            for d in range(3):
                filled[:, d] = np.interp(np.arange(len(angles)), idx, angles[idx, d])
        out[f"beat_align_{tag}"] = (M.beat_align(onsets, M.motion_beats(filled)) if ok.any()
                                    else float("nan"))
    return out


def score_video(generated: Path, reference: Path | None, tools: Tools,
                coeffs: Path | None = None) -> dict:
    """Every metric this machine can compute for one generated video (and its ground truth):
    a flat dict of floats (nan where a metric does not apply, e.g. no face found)."""
    from fd2talk.model.evaluation.nets import syncnet_embeddings
    from fd2talk.model.generation.pipeline import speech_envelope
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN

    gen = read_video(generated)
    row: dict = {"frames": len(gen), "face_rate": float("nan")}
    ref = None
    if reference is not None:
        ref = read_video(reference)
        gen = read_video(generated, (ref.shape[2], ref.shape[1]))
        n = min(len(gen), len(ref))
        gen, ref = gen[:n], ref[:n]
        row.update(psnr=float(np.mean(M.psnr(gen, ref))), ssim=float(np.mean(M.ssim(gen, ref))))
    samples = _speech(generated, reference)
    lm = _landmarks(gen, tools.face_model)
    row["face_rate"] = float(lm["valid"].mean())
    jaw = np.where(lm["valid"], lm["exp"][:, JAW_OPEN], np.nan)
    onsets = None
    if samples is not None:
        env = speech_envelope(samples, len(gen))
        row["jaw_r_speech"] = M.pearson(jaw, env)
        row["_curves"] = {"jawOpen": jaw, "speech envelope": env}
        onsets = M.speech_onsets(samples, len(gen))
    row.update(_motion_metrics(_head(lm["pose"], lm["valid"]), onsets, "lmk"))
    if coeffs is not None and coeffs.is_file():
        with np.load(coeffs) as z:
            if "pose" in z:
                row.update(_motion_metrics(_head(z["pose"][:len(gen)]), onsets, "coeffs"))
    if ref is not None:
        lr = _landmarks(ref, tools.face_model)
        row["lmd"] = M.lmd(lm["lm"], lr["lm"], lm["valid"], lr["valid"])
        row["jaw_r_true"] = M.pearson(jaw, np.where(lr["valid"], lr["exp"][:, JAW_OPEN], np.nan))
    if tools.hopenet is not None:
        from fd2talk.model.evaluation.nets import hopenet_angles

        row.update(_motion_metrics(hopenet_angles(tools.hopenet, gen), onsets, "hopenet"))
    if tools.inception is not None and ref is not None:  # FID is over the set (summarize)
        from fd2talk.model.evaluation.nets import inception_features

        row["_fid"] = (inception_features(tools.inception, gen),
                       inception_features(tools.inception, ref))
    if tools.syncnet is not None and samples is not None:
        try:
            row.update(M.lse(*syncnet_embeddings(tools.syncnet, gen, samples)))
        except ValueError as e:  # too short for one 5-frame window
            row["lse_note"] = str(e)
    return row


def match_videos(generated: Path, reference: Path | None) -> list[tuple[str, Path, Path | None]]:
    """(name, generated, ground truth) matched by file stem; a generated video without its
    ground truth is an error naming it (with `reference`)."""
    if not generated.is_dir():
        raise UserError(f"--generated {generated} is not a folder")
    gens = sorted(p for p in generated.iterdir() if p.suffix.lower() in VIDEO_EXTS
                  and not p.name.startswith("."))
    if not gens:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTS)}) in {generated}")
    _no_duplicates(gens, generated)
    if reference is None:
        return [(p.stem, p, None) for p in gens]
    if not reference.is_dir():
        raise UserError(f"--reference {reference} is not a folder")
    ref_list = [p for p in reference.iterdir() if p.suffix.lower() in VIDEO_EXTS
                and not p.name.startswith(".")]
    _no_duplicates(ref_list, reference)
    refs = {p.stem: p for p in ref_list}
    missing = [p.name for p in gens if p.stem not in refs]
    if missing:
        raise UserError(f"no ground truth in {reference} for {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}: videos are matched by name")
    return [(p.stem, p, refs[p.stem]) for p in gens]


def _no_duplicates(paths: list[Path], folder: Path) -> None:
    seen: dict[str, str] = {}
    for p in sorted(paths):
        if p.stem in seen:
            raise UserError(f"{folder} has two videos named {p.stem!r} ({seen[p.stem]}, "
                            f"{p.name}): videos are matched by name, keep one")
        seen[p.stem] = p.name


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per metric: mean, std over videos (nan-ignoring) and how many videos have it; FID is
    one number over all frames of all videos (generated against ground truth)."""
    out = {}
    feats = [r["_fid"] for r in rows if "_fid" in r]
    if feats:
        gen, ref = np.concatenate([g for g, _ in feats]), np.concatenate([r for _, r in feats])
        try:
            out["fid"] = {"mean": M.fid(gen, ref), "std": float("nan"), "videos": len(feats),
                          "frames": int(len(gen))}
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
        ours.append("n/a" if s is None else f"{s['mean']:.3f}" if abs(s["mean"]) < 10 else
                    f"{s['mean']:.2f}")
    paper = [p for *_, p in COLUMNS]
    width = [max(len(h), len(a), len(b)) for h, a, b in zip(heads, ours, paper, strict=True)]
    name_w = max(len(label), len("FD2Talk (paper)"))

    def line(name, cells):
        return f"{name:<{name_w}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, width,
                                                                              strict=True))
    lines = [line("", heads), line(label, ours), line("FD2Talk (paper)", paper)]
    lines.append("paper only (a protocol we cannot identify): " +
                 ", ".join(f"{k} {v}" for k, v in PAPER_ONLY.items()))
    lines += [f"unavailable: {v}" for v in unavailable.values()]
    return "\n".join(lines)


def write_report(out: Path, rows: list[dict], summary: dict, settings: dict,
                 unavailable: dict[str, str], weights: dict | None = None) -> dict[str, Path]:
    """eval.json (settings, versions, weights files and their sha256, summary, rows), eval.csv (a row per video) and
    eval.png (each metric's distribution over videos; mouth opening against speech)."""
    from fd2talk.core.atomic import atomic_path, json_default

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "csv": out / "eval.csv", "png": out / "eval.png"}
    doc = {"settings": settings, "versions": versions(), "weights": weights,
           "unavailable": unavailable, "summary": summary}
    rows_flat = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    doc["videos"] = rows_flat
    keys = sorted({k for r in rows_flat for k in r})
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, ["name"] + [k for k in keys if k != "name"])
        w.writeheader()
        w.writerows(rows_flat)
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=json_default, allow_nan=True))
    _figure(paths["png"], rows)
    return paths


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("fd2talk", "torch", "numpy", "scipy", "scikit-image", "mediapipe",
                "python_speech_features"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _figure(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fd2talk.core.atomic import atomic_path

    keys = [(k, h) for k, h, _, _ in COLUMNS if any(math.isfinite(r.get(k, math.nan))
                                                    for r in rows)]
    curves = [r for r in rows if "_curves" in r][:3]
    cols = max(1, len(keys))
    fig = plt.figure(figsize=(max(2.2 * cols, 6.0), 5.4 if curves else 2.6), layout="constrained")
    grid = fig.add_gridspec(2 if curves else 1, cols * max(1, len(curves)))
    per = cols * max(1, len(curves)) // max(1, len(curves))
    for i, r in enumerate(curves):  # the mouth opening read back against the speech
        ax = fig.add_subplot(grid[1, i * per:(i + 1) * per])
        t = np.arange(len(r["_curves"]["jawOpen"])) / 25
        env = r["_curves"]["speech envelope"]
        ax.plot(t, r["_curves"]["jawOpen"], lw=1, label="jawOpen (read back)")
        ax.plot(t, env / max(float(np.max(env)), 1e-9) * np.nanmax(
            np.r_[r["_curves"]["jawOpen"], 1e-9]), lw=1, alpha=0.7, label="speech (scaled)")
        ax.set_title(f"{r['name']}: r = {r.get('jaw_r_speech', math.nan):.2f}", fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper right")
    w = max(1, len(curves))
    for i, (k, h) in enumerate(keys):
        ax = fig.add_subplot(grid[0, i * w:(i + 1) * w])
        v = [r[k] for r in rows if math.isfinite(r.get(k, math.nan))]
        ax.boxplot(v, widths=0.5)
        ax.scatter(np.ones(len(v)) + np.random.default_rng(0).uniform(-0.12, 0.12, len(v)), v,
                   s=10, alpha=0.7)
        ax.set_title(h, fontsize=9)
        ax.set_xticks([])
    fig.suptitle(f"per-video metrics ({len(rows)} videos)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


_WORKER_TOOLS: Tools | None = None


def _worker_init(paths: dict, face_model: str | None) -> None:
    global _WORKER_TOOLS
    import torch

    torch.set_num_threads(1)  # the workers share the cores
    _WORKER_TOOLS = Tools.load(paths["syncnet"], face_model, "cpu", paths["hopenet"],
                               paths["inception"])


def _worker_score(job: tuple) -> dict:
    name, gen, ref, coeffs = job
    return {"name": name, **score_video(gen, ref, _WORKER_TOOLS, coeffs)}


def score_videos(pairs: list[tuple[str, Path, Path | None]], tools: Tools,
                 progress: bool = True, workers: int = 1,
                 coeffs: dict[str, Path] | None = None) -> tuple[list[dict], float]:
    """Rows (one per video, with its name, in the order of `pairs`) and the seconds they took.
    workers > 1: videos are scored in that many processes (each loads its own networks, on
    the CPU); the metrics are the same. coeffs: a motion .npz per name (default: NAME.npz
    beside the generated video)."""
    from tqdm import tqdm

    coeffs = coeffs or {}
    jobs = [(name, gen, ref, coeffs.get(name, gen.with_suffix(".npz"))) for name, gen, ref in pairs]
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="scoring", unit="video", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        rows = []
        for name, gen, ref, npz in jobs:
            rows.append({"name": name, **score_video(gen, ref, tools, npz)})
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no forked torch or MediaPipe threads
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                                 initializer=_worker_init,
                                 initargs=(tools.paths, tools.face_model)) as pool:
            rows = []
            for row in pool.map(_worker_score, jobs):
                rows.append(row)
                bar.update()
    bar.close()
    return rows, time.perf_counter() - start


def run_protocol(model: list[Path], shards: Path, split: str, out: Path, tools: Tools,
                 options=None, progress: bool = True, workers: int = 1
                 ) -> tuple[list[dict], dict[str, float]]:
    """The paper's protocol on a model's held-out split: each clip generated from its first
    valid frame and its own speech, once with generated pose (`out/generated`, with its
    motion .npz: sync, diversity, beat align) and once with the clip's own pose
    (`out/own_pose`: PSNR, SSIM, LMD, jaw r against the ground truth, `out/reference`).
    Videos already there are reused, so a killed run goes on where it stopped. All clips are
    generated first (the pipeline uses every core), then scored (`workers` processes).
    Returns the rows and the seconds spent generating and scoring."""
    from tqdm import tqdm

    from fd2talk.core.atomic import atomic_path
    from fd2talk.model.data import loader as data
    from fd2talk.model.generation.pipeline import FD2TalkPipeline, Options, save_coeffs

    options = options or Options()
    options = dataclasses.replace(options, crop=False, pose="generated")
    dirs = {k: out / k for k in ("reference", "generated", "own_pose", "poses")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    clips = [c for c in data.iter_clips(shards, split, ("exp", "pose", "valid", "mp4"))
             if c["meta"].get("audio") is not False]  # video-only clips have no speech to use
    if not clips:
        raise UserError(f"no clips with speech in the {split!r} split of {shards}")
    pipe = None
    timings = {"generate": 0.0, "score": 0.0}
    started = time.perf_counter()
    for c in tqdm(clips, desc=f"generating {split}", unit="clip", disable=not progress):
        key = c["key"]
        ref_mp4, gen_mp4 = dirs["reference"] / f"{key}.mp4", dirs["generated"] / f"{key}.mp4"
        own_mp4, pose_npz = dirs["own_pose"] / f"{key}.mp4", dirs["poses"] / f"{key}.npz"
        if not ref_mp4.is_file():
            with atomic_path(ref_mp4) as tmp:
                tmp.write_bytes(c["mp4"])
        if not pose_npz.is_file():
            with atomic_path(pose_npz) as tmp, open(tmp, "wb") as f:
                np.savez(f, pose=c["pose"])
        if not (gen_mp4.is_file() and gen_mp4.with_suffix(".npz").is_file()
                and own_mp4.is_file()):
            if pipe is None:
                pipe = FD2TalkPipeline.from_pretrained(*model, device=tools.device,
                                                      face_model=tools.face_model)
            frames = read_video(ref_mp4)
            ref = frames[int(np.flatnonzero(c["valid"])[0])]
            if not (gen_mp4.is_file() and gen_mp4.with_suffix(".npz").is_file()):
                result = pipe(ref, ref_mp4, out=gen_mp4, options=options)
                save_coeffs(gen_mp4.with_suffix(".npz"), result, pipe.motion_model.info.coeffs,
                            ref_mp4)
            if not own_mp4.is_file():
                own = dataclasses.replace(options, pose=f"from:{pose_npz}")
                pipe(ref, ref_mp4, out=own_mp4, options=own)
    timings["generate"] = time.perf_counter() - started
    keys = [c["key"] for c in clips]
    free, t_free = score_videos([(k, dirs["generated"] / f"{k}.mp4", None) for k in keys],
                                tools, progress, workers)
    fixed, t_fixed = score_videos([(k, dirs["own_pose"] / f"{k}.mp4",
                                    dirs["reference"] / f"{k}.mp4") for k in keys],
                                  tools, progress, workers,
                                  coeffs={k: dirs["poses"] / "none.npz" for k in keys})
    timings["score"] = t_free + t_fixed
    rows = []
    for a, b in zip(free, fixed, strict=True):
        row = dict(a)
        row.update({k: b[k] for k in ("psnr", "ssim", "lmd", "jaw_r_true", "_fid") if k in b})
        rows.append(row)
    return rows, timings
