"""The bench's plots: the mouth-to-ear CDF, where the time goes, latency against sessions.
matplotlib is optional (the `bench` extra): without it the JSON and the summary are written
all the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import STAGE_PARTS, measured


def _cdf(data: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Step coordinates of an empirical CDF that starts from 0 at the smallest value."""
    xs = np.concatenate([data[:1], data])
    ys = np.concatenate([[0.0], np.arange(1, data.size + 1) / data.size])
    return xs, ys


def pyplot() -> Any | None:
    """matplotlib's pyplot on the file-only backend, or None when matplotlib is missing
    (it comes with the `bench` extra; the JSON and the summary need none of it)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots(result: dict[str, Any], out: Path, plt: Any) -> list[Path]:
    runs, summary = result["runs"], result["summary"]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        data = np.sort([t["mouth_to_ear_ms"] for t in measured(run["turns"])])
        if data.size:
            ax.step(
                *_cdf(data),
                where="post",
                label=f"{run['sessions']} session(s)",
            )
    floor = [f["floor_ms"] for f in result.get("floor") or [] if f.get("floor_ms") is not None]
    if floor:
        ax.step(
            *_cdf(np.sort(floor)),
            where="post",
            linestyle="--",
            color="grey",
            label="compute floor",
        )
    ax.set(xlabel="mouth-to-ear (ms)", ylabel="fraction of turns", title="Mouth-to-ear CDF")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    written.append(out / "cdf.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    names = list(summary["by_sessions"])
    bottoms = np.zeros(len(names))
    for label, _ in STAGE_PARTS:
        heights = np.asarray(
            [max(0.0, summary["by_sessions"][n]["stages_mean"][label] or 0.0) for n in names]
        )
        ax.bar(names, heights, bottom=bottoms, label=label)
        bottoms += heights
    m2e = [summary["by_sessions"][n]["metrics"]["mouth_to_ear_ms"]["mean"] or 0 for n in names]
    ax.scatter(names, m2e, color="black", marker="_", s=600, zorder=3, label="mouth-to-ear mean")
    ax.set(
        xlabel="concurrent sessions",
        ylabel="ms (mean of each stage)",
        title="Where the time goes, from the end of speech to the ear",
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    written.append(out / "stages.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [int(n) for n in names]
    for key, style in (("p50", "o-"), ("p90", "s--"), ("max", "^:")):
        ys = [summary["by_sessions"][n]["metrics"]["mouth_to_ear_ms"][key] for n in names]
        ax.plot(xs, [np.nan if y is None else y for y in ys], style, label=f"mouth-to-ear {key}")
    if "floor" in summary and summary["floor"]["floor_ms"]["p50"] is not None:
        ax.axhline(
            summary["floor"]["floor_ms"]["p50"],
            color="grey",
            linestyle="--",
            label="compute floor p50",
        )
    ax.set(
        xlabel="concurrent sessions",
        ylabel="ms",
        title="Latency against concurrent sessions",
        xticks=xs,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out / "sessions.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
