"""PNG plots of a TAS-Balanced run: cluster sizes, teacher margins and their bins, loss curves, metrics.

Figures are drawn with matplotlib's object API (no pyplot state, no display needed) and written as PNG.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> plot_cluster_sizes(np.array([40, 25, 3, 31]), folder / "clusters.png", batch_size=32).name
    'clusters.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from st_tasb.training.sampler import PairIndex
from st_tasb.training.settings import TrainingSettings

LOSS_KEYS = ("loss", "pairwise", "in_batch", "contrastive")
"""Log entries drawn by :func:`plot_loss_curves`: the total loss and the dual-teacher components."""


def plot_cluster_sizes(sizes: np.ndarray, path: str | Path, *, batch_size: int | None = None) -> Path:
    """Histogram of queries per cluster (sorted bars), with the batch size marked.

    Args:
        sizes: number of queries in each cluster.
        path: the PNG file to write.
        batch_size: draw a line at the batch size (a smaller cluster cannot fill a batch alone).

    Returns:
        ``path``.
    """
    sizes = np.sort(np.asarray(sizes))[::-1]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.bar(np.arange(len(sizes)), sizes, width=1.0, color="tab:blue")
    if batch_size is not None:
        axes.axhline(batch_size, color="tab:red", linestyle="--", label=f"batch size {batch_size}")
        axes.legend()
    axes.set(
        xlabel="cluster (largest first)", ylabel="queries",
        title=f"{len(sizes)} query clusters: median {np.median(sizes):g} queries, max {sizes.max()}",
    )
    return _save(figure, path)


def plot_margins(
    query_index: np.ndarray, margin: np.ndarray, path: str | Path, *, n_bins: int = TrainingSettings.n_bins, draws: int = 200, seed: int = 0
) -> Path:
    """Teacher margins, and where in its own margin range each query's sampled pair falls.

    Left: the distribution of all pairs' margins. Right: for pairs drawn by balanced and by uniform
    sampling (``draws`` draws per query, with the sampler's own :class:`~st_tasb.training.sampler.PairIndex`),
    the pair's position in its query's margin range (0 = the query's smallest margin, 1 = its
    largest), with the ``n_bins`` equal-width bin edges. Balanced sampling flattens the skew of
    uniform sampling towards the crowded bins.

    Args:
        query_index: the query of each pair, rows grouped by query and sorted by margin within a query
            (the layout of the training dataset).
        margin: the teacher margin of each pair.
        path: the PNG file to write.
        n_bins: margin bins per query.
        draws: pairs drawn per query and sampling mode.
        seed: random seed of the draws.

    Returns:
        ``path``.
    """
    query_index, margin = np.asarray(query_index), np.asarray(margin, dtype=np.float64)
    index = PairIndex.build(query_index, margin, np.zeros(len(margin), dtype=np.int64), n_bins)
    low = np.repeat(margin[index.query_start], index.query_length)
    span = np.repeat(margin[index.query_start + index.query_length - 1], index.query_length) - low
    position = np.divide(margin - low, span, out=np.zeros_like(margin), where=span > 0)
    queries = np.tile(np.arange(index.n_queries), draws)
    rng = np.random.default_rng(seed)

    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.hist(margin, bins=50, color="tab:gray")
    left.set(xlabel="teacher margin: score(q, pos) - score(q, neg)", ylabel="pairs",
             title=f"{len(margin):,} pairs over {index.n_queries:,} queries")
    edges = np.linspace(0, 1, n_bins + 1)
    for balanced, color in ((False, "tab:orange"), (True, "tab:blue")):
        rows = index.draw_pairs(queries, rng, balanced=balanced)
        label = "balanced (TAS-B)" if balanced else "uniform"
        right.hist(position[rows], bins=edges, histtype="step", linewidth=2, color=color, label=label, density=True)
    for edge in edges:
        right.axvline(edge, color="lightgray", linewidth=0.8, zorder=0)
    right.set(xlabel="drawn pair's position in its query's margin range (0 = min, 1 = max)",
              ylabel="density", title=f"sampled pairs; gray lines: the {n_bins} margin bins")
    right.legend()
    return _save(figure, path)


def plot_loss_curves(log_history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """The training loss and its components (pairwise, in-batch, contrastive: those logged) against the step.

    Args:
        log_history: the Trainer's log entries (``trainer.state.log_history``).
        path: the PNG file to write.

    Returns:
        ``path``.

    Raises:
        ValueError: if no entry has a training loss.
    """
    entries = [entry for entry in log_history if "loss" in entry and "step" in entry]
    if not entries:
        raise ValueError("the log history has no training loss entries (is logging_steps larger than the run?)")
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for key in LOSS_KEYS:
        points = [(entry["step"], entry[key]) for entry in entries if key in entry]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, marker="o", markersize=3, label=key)
    axes.set(xlabel="step", ylabel="loss (mean over the logging interval)", title="training loss", yscale="log")
    axes.legend()
    return _save(figure, path)


def plot_metrics(evaluations: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Grouped bars of retrieval metrics, one group per metric and one bar per evaluation.

    Args:
        evaluations: name (e.g. ``"student before"``) -> metric -> value.
        path: the PNG file to write.

    Returns:
        ``path``.
    """
    names = list(evaluations)
    metrics = list(next(iter(evaluations.values())))
    width = 0.8 / len(names)
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.subplots()
    for offset, name in enumerate(names):
        values = [evaluations[name].get(metric, np.nan) for metric in metrics]
        axes.bar(np.arange(len(metrics)) + offset * width, values, width=width, label=name)
    axes.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2, metrics)
    axes.set(ylabel="value", ylim=(0, 1), title="retrieval on the dev split")
    axes.legend()
    return _save(figure, path)


def plot_batch_composition(top_shares: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Histogram of the share of each batch's queries that come from its largest cluster, per sampler.

    Args:
        top_shares: sampler name (e.g. ``"TAS-B"``, ``"random batches"``) -> one share per batch of an epoch.
        path: the PNG file to write.

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    edges = np.linspace(0, 1, 21)
    for name, shares in top_shares.items():
        shares = np.asarray(shares)
        axes.hist(shares, bins=edges, alpha=0.6, label=f"{name}: {np.mean(shares == 1):.0%} single-cluster batches")
    axes.set(xlabel="share of the batch in its largest cluster", ylabel="batches", title="batch composition, one epoch")
    axes.legend()
    return _save(figure, path)


def plot_dev_curve(points: Sequence[Mapping[str, float]], path: str | Path, *, metric: str = "ndcg@10",
                   reference: Mapping[str, float] | None = None) -> Path:
    """A dev metric against the training step, with horizontal reference lines (e.g. the teacher).

    Args:
        points: ``{"step": N, metric: value, ...}`` entries.
        path: the PNG file to write.
        metric: the metric drawn.
        reference: name -> value of a horizontal line.

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.plot([p["step"] for p in points], [p[metric] for p in points], marker="o", label="student")
    for name, value in (reference or {}).items():
        axes.axhline(value, linestyle="--", color="gray")
        axes.annotate(f"{name} {value:.3f}", (0, value), textcoords="offset points", xytext=(4, 4))
    axes.set(xlabel="training step", ylabel=f"dev {metric}", ylim=(0, 1), title=f"dev {metric} during training")
    return _save(figure, path)


def plot_encoding_speed(speeds: Mapping[str, float], quality: Mapping[str, float], path: str | Path) -> Path:
    """Passages encoded per second against dev nDCG@10, one point per model.

    Args:
        speeds: model name -> passages per second.
        quality: model name -> dev nDCG@10.
        path: the PNG file to write.

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for name, speed in speeds.items():
        axes.scatter(speed, quality[name], s=60)
        axes.annotate(f"{name}: {speed:.0f}/s, {quality[name]:.3f}", (speed, quality[name]),
                      textcoords="offset points", xytext=(6, -4))
    axes.set(xlabel="passages encoded per second (CPU)", ylabel="dev nDCG@10", ylim=(0, 1),
             title="quality against encoding speed")
    axes.set_xlim(0, max(speeds.values()) * 1.6)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
