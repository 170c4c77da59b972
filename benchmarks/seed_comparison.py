"""Comparing training variants run with several seeds: per-seed figures, mean ± sd, and paired significance tests.

Used by the ablation scripts. For each variant against the reference variant:

- the paired difference of dev nDCG@10 over the seeds, with a paired t-test over the seeds (scipy);
- a paired test over queries (ranx ``compare``: Fisher's randomization test on the TREC runs, every seed's run
  of a query a separate pair), per seed and pooled over the seeds;
- the 95 % confidence interval of the mean difference over those pooled (seed, query) pairs (scipy's paired t
  interval of ranx's per-query scores): the effect size the comparison can resolve.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from ranx import Qrels as RanxQrels
from ranx import Run as RanxRun
from ranx import compare, evaluate
from scipy import stats

from st_tasb.data.runs import read_trec_run

METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
TESTED_METRICS = ("ndcg@10", "mrr@10")
"""The metrics whose differences are tested (over seeds and over queries)."""
PERMUTATIONS = 10_000
"""Permutations of ranx's Fisher randomization test; a p-value of 0 means below 1 / PERMUTATIONS."""


@dataclass
class SeededRuns:
    """The dev results of every variant and seed.

    Attributes:
        metrics: variant -> seed -> dev metrics of the trained model.
        run_files: variant -> seed -> its TREC run on the dev queries.
    """

    metrics: dict[str, dict[int, dict[str, float]]]
    run_files: dict[str, dict[int, Path]]

    def add(self, variant: str, seed: int, metrics: dict[str, float], run_file: Path) -> None:
        self.metrics.setdefault(variant, {})[seed] = metrics
        self.run_files.setdefault(variant, {})[seed] = run_file

    def complete_seeds(self, seeds: list[int]) -> list[int]:
        """The seeds that every variant has finished."""
        return [s for s in seeds if all(s in by_seed for by_seed in self.metrics.values())]


def finished_run(run_dir: Path, seed: int, config: Any = None, **recorded: Any) -> dict | None:
    """The ``metrics.json`` of an earlier run in ``run_dir`` with this ``seed``, the settings of ``config`` (a
    dataclass, compared as JSON; ``None``: not compared) and the ``recorded`` values, or None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    wanted = {"seed": seed, **recorded}
    if config is not None:
        wanted["config"] = json.loads(json.dumps(dataclasses.asdict(config)))  # as JSON holds it (tuples as lists)
    return metrics if all(metrics.get(key) == value for key, value in wanted.items()) else None


def run_variants(
    data: str, output: Path, configs: Mapping[str, Any], seeds: list[int], *, report_only: bool = False,
    earlier_runs: Mapping[str, Path] | None = None,
) -> tuple[SeededRuns, dict[str, dict[str, float]], list[str]]:
    """Run (or reuse) one demo per variant and seed, seeds outermost, so a partial run already compares every variant.

    Args:
        data: the BEIR folder.
        output: one demo output per variant and seed (OUTPUT/<variant>/seed<N>), and the shared work folder.
        configs: variant name -> :class:`~st_tasb.cli.adapt_config.AdaptConfig`.
        seeds: the training seeds.
        report_only: run nothing; take the finished runs only.
        earlier_runs: variant -> a folder of earlier finished runs of that variant (``seed<N>`` subfolders, e.g.
            ``recipes/st-tasb``), taken as they are when OUTPUT has none (their settings are not compared: the caller
            vouches for them).

    Returns:
        The results, the untrained student's and the teacher's dev metrics, and the folders of the runs taken
        from ``earlier_runs``.
    """
    from st_tasb.cli.adapt_pipeline import run_adapt

    runs, fixed, reused = SeededRuns({}, {}), {}, []
    for seed in seeds:
        for variant, config in configs.items():
            run_dir = output / variant / f"seed{seed}"
            metrics = finished_run(run_dir, seed, config)
            earlier = Path((earlier_runs or {}).get(variant, "")) / f"seed{seed}"
            if metrics is None and variant in (earlier_runs or {}) and (earlier / "runs" / "dev-student-after.trec").is_file():
                metrics, run_dir = finished_run(earlier, seed), earlier
                reused.append(str(earlier))
                print(f"{variant} seed {seed}: taken from {earlier}")
            if metrics is None and report_only:
                continue
            if metrics is None:
                metrics = run_adapt(data, run_dir, seed=seed, config=config, work_dir=output / "work",
                                   show_progress_bar=False, overwrite=True).metrics  # a run folder of its own
            runs.add(variant, seed, metrics["dev"]["student_after"], run_dir / "runs" / "dev-student-after.trec")
            fixed = {"before training": metrics["dev"]["student_before"], "teacher": metrics["dev"]["teacher"]}
            print(f"{variant} seed {seed}: dev ndcg@10 {metrics['dev']['student_after']['ndcg@10']:.4f} "
                  f"({metrics['seconds']['total']:.0f} s)", flush=True)
    return runs, fixed, reused


def summarise(
    runs: SeededRuns, seeds: list[int], reference: str, qrels: Mapping[str, Mapping[str, int]], heading: str,
    fixed: Mapping[str, Mapping[str, float]] | None = None,
) -> dict:
    """Print and return the per-seed figures, means, paired differences and significance tests.

    Args:
        runs: the results.
        seeds: the seeds to report (every variant must have them).
        reference: the variant the others are compared with.
        qrels: the judgments of the dev queries.
        heading: the first printed line (what was run).
        fixed: rows printed above the variants (e.g. the untrained student and the teacher).
    """
    print(f"\n{heading}; {len(seeds)} seeds (mean ± sd)")
    print(f"{'variant':<22}" + "".join(f"{m:>18}" for m in METRICS) + "   ndcg@10 per seed")
    for name, values in (fixed or {}).items():
        print(f"{name:<22}" + "".join(f"{values[m]:>18.4f}" if m in values else f"{'':>18}" for m in METRICS))
    summary = {}
    for variant, by_seed in runs.metrics.items():
        values = [by_seed[s] for s in seeds]
        summary[variant] = {m: {"mean": statistics.mean(v[m] for v in values), "sd": _sd([v[m] for v in values])}
                            for m in METRICS}
        print(f"{variant:<22}" + "".join(f"{summary[variant][m]['mean']:>10.4f} ± {summary[variant][m]['sd']:.4f}"
                                         for m in METRICS) + "   " + " / ".join(f"{v['ndcg@10']:.4f}" for v in values))
    tests = {}
    for variant in runs.metrics:
        if variant == reference:
            continue
        tests[variant] = {}
        for metric in TESTED_METRICS:
            tests[variant][metric] = t = paired_tests(runs, reference, variant, seeds, qrels, metric)
            print(f"\n{variant} - {reference}: {metric} difference {t['mean_difference']:+.4f} "
                  f"(sd {t['sd_difference']:.4f} over seeds; per seed {' / '.join(f'{d:+.4f}' for d in t['per_seed'])})")
            print(f"  paired t-test over {len(seeds)} seeds: p = {t['seeds_t_test_p']:.3g}")
            print(f"  95 % confidence interval of the difference over the pooled queries (scipy): "
                  f"[{t['queries_pooled_ci95'][0]:+.4f}, {t['queries_pooled_ci95'][1]:+.4f}]")
            print(f"  Fisher randomization over queries (ranx, {PERMUTATIONS:,} permutations), pooled over seeds: "
                  f"p {_p_text(t['queries_pooled_p'])}; "
                  f"per seed: {' / '.join(_p_text(p) for p in t['queries_per_seed_p'])}")
    return {
        "seeds": seeds,
        "reference": reference,
        "fixed": dict(fixed or {}),
        "runs": {v: {str(s): by_seed[s] for s in seeds} for v, by_seed in runs.metrics.items()},
        "summary": summary,
        "tests": tests,
    }


def paired_tests(
    runs: SeededRuns, reference: str, variant: str, seeds: list[int], qrels: Mapping[str, Mapping[str, int]],
    metric: str = "ndcg@10",
) -> dict:
    """Paired differences of ``variant`` against ``reference`` in ``metric`` over seeds (t-test) and over queries
    (ranx)."""
    ours = [runs.metrics[variant][s][metric] for s in seeds]
    theirs = [runs.metrics[reference][s][metric] for s in seeds]
    differences = [a - b for a, b in zip(ours, theirs)]
    seed_test = stats.ttest_rel(ours, theirs)
    trec = {name: {s: read_trec_run(runs.run_files[name][s]) for s in seeds} for name in (reference, variant)}
    dev_queries = set(trec[reference][seeds[0]])
    dev_qrels = {q: dict(docs) for q, docs in qrels.items() if q in dev_queries}

    def fisher_p(pick: list[int]) -> float:
        pooled_qrels = RanxQrels({f"{s}:{q}": docs for s in pick for q, docs in dev_qrels.items()})
        pooled = [RanxRun({f"{s}:{q}": docs for s in pick for q, docs in trec[name][s].items()}, name=name)
                  for name in (reference, variant)]
        report = compare(pooled_qrels, pooled, metrics=[metric], stat_test="fisher", n_permutations=PERMUTATIONS,
                         max_p=0.05, random_seed=0)
        return float(report.comparisons[reference, variant][metric]["p_value"])

    per_query = {name: [] for name in (reference, variant)}  # every seed's dev questions, pooled
    for s in seeds:
        for name in (reference, variant):
            scores = evaluate(RanxQrels(dev_qrels), RanxRun(trec[name][s]), metric, return_mean=False)
            per_query[name].extend(np.atleast_1d(scores).tolist())
    interval = stats.ttest_rel(per_query[variant], per_query[reference]).confidence_interval(0.95)
    return {
        "per_seed": differences,
        "queries_pooled_ci95": [float(interval.low), float(interval.high)],
        "mean_difference": statistics.mean(differences),
        "sd_difference": _sd(differences),
        "seeds_t_test_p": float(seed_test.pvalue),
        "queries_pooled_p": fisher_p(seeds),
        "queries_per_seed_p": [fisher_p([s]) for s in seeds],
    }


def plot(runs: SeededRuns, seeds: list[int], path: Path, title: str) -> None:
    """Dev nDCG@10 of every run: one column per variant, one marker per seed, the mean as a bar."""
    figure = Figure(figsize=(max(7, 1.8 * len(runs.metrics)), 4), layout="constrained")
    axes = figure.subplots()
    for x, by_seed in enumerate(runs.metrics.values()):
        values = [by_seed[s]["ndcg@10"] for s in seeds]
        axes.bar(x, np.mean(values), color="lightgray", width=0.6)
        axes.scatter(np.full(len(values), x), values, color="tab:blue", zorder=3)
    axes.set_xticks(range(len(runs.metrics)), list(runs.metrics))
    axes.set(ylabel="dev nDCG@10", title=title)
    low = min(by_seed[s]["ndcg@10"] for by_seed in runs.metrics.values() for s in seeds)
    axes.set_ylim(max(0.0, low - 0.05), None)
    figure.savefig(path, dpi=120)


def _p_text(p: float) -> str:
    """A Fisher p-value as text: ``= 0.0123``, or ``< 0.0001`` when no permutation was as extreme (ranx gives 0)."""
    return f"< {1 / PERMUTATIONS:g}" if p == 0 else f"= {p:.3g}"


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
