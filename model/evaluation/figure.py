"""eval.png: each metric's distribution over the videos (a box plot with the videos as points)
and, for the first three videos with speech, the mouth opening read back from the video
(MediaPipe's jawOpen) against the speech envelope.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fd2talk.core.schema import FPS


def figure(path: Path, rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """The figure of `rows` (`score_video`'s, with their names) for the metrics `columns`
    ((key, header) pairs, those no video has left out), written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fd2talk.core.atomic import atomic_path

    keys = [(k, h) for k, h in columns if any(math.isfinite(r.get(k, math.nan)) for r in rows)]
    curves = [r for r in rows if "_curves" in r][:3]
    cols = max(1, len(keys))
    fig = plt.figure(figsize=(max(2.2 * cols, 6.0), 5.4 if curves else 2.6), layout="constrained")
    grid = fig.add_gridspec(2 if curves else 1, cols * max(1, len(curves)))
    per = cols * max(1, len(curves)) // max(1, len(curves))
    for i, r in enumerate(curves):  # the mouth opening read back against the speech
        ax = fig.add_subplot(grid[1, i * per : (i + 1) * per])
        t = np.arange(len(r["_curves"]["jawOpen"])) / FPS
        env = r["_curves"]["speech envelope"]
        ax.plot(t, r["_curves"]["jawOpen"], lw=1, label="jawOpen (read back)")
        ax.plot(
            t,
            env / max(float(np.max(env)), 1e-9) * np.nanmax(np.r_[r["_curves"]["jawOpen"], 1e-9]),
            lw=1,
            alpha=0.7,
            label="speech (scaled)",
        )
        ax.set_title(f"{r['name']}: r = {r.get('jaw_r_speech', math.nan):.2f}", fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper right")
    w = max(1, len(curves))
    for i, (k, h) in enumerate(keys):
        ax = fig.add_subplot(grid[0, i * w : (i + 1) * w])
        v = [r[k] for r in rows if math.isfinite(r.get(k, math.nan))]
        ax.boxplot(v, widths=0.5)
        ax.scatter(
            np.ones(len(v)) + np.random.default_rng(0).uniform(-0.12, 0.12, len(v)),
            v,
            s=10,
            alpha=0.7,
        )
        ax.set_title(h, fontsize=9)
        ax.set_xticks([])
    fig.suptitle(f"per-video metrics ({len(rows)} videos)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
