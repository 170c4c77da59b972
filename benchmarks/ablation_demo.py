"""Ablation of the demo: TAS-Balanced against random batches and uniform pairs, same budget, several seeds.

Every variant trains the same student with the same teachers, data, steps, batch size and learning rate; only
the batch composition (topic clusters or random queries) and the pair sampling (margin-balanced or uniform)
change. The teacher embeddings, scores and the untrained student's evaluation are computed once and shared
by all runs. A run whose OUTPUT/<variant>/seed<N>/metrics.json already records the same settings is reused,
so an interrupted ablation resumes and more seeds can be added later.

Printed and written to OUTPUT/ablation.json:

- dev metrics of every run, and their mean and sample standard deviation over the seeds;
- for each variant against TAS-Balanced: the paired difference of dev nDCG@10 over the seeds, with a paired
  t-test over the seeds (scipy) and a paired test over queries (ranx ``compare``: Fisher's randomization test
  on the TREC runs, every seed's run of a query a separate pair), per seed and pooled.

A plot of nDCG@10 per seed and variant goes to OUTPUT/ablation.png.

    python benchmarks/ablation_demo.py --data ../shared/datasets/scifact-train --output ablation --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from ranx import Qrels as RanxQrels
from ranx import Run as RanxRun
from ranx import compare
from scipy import stats

from st_tasb.cli.demo_pipeline import DemoConfig, run_demo
from st_tasb.data.beir import load_beir
from st_tasb.data.runs import read_trec_run

VARIANTS = {
    "tas-balanced": {"topic_aware": True, "balanced": True},
    "random-batches": {"topic_aware": False, "balanced": True},
    "uniform-pairs": {"topic_aware": True, "balanced": False},
    "random-uniform": {"topic_aware": False, "balanced": False},
}
REFERENCE = "tas-balanced"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR folder (scifact-train)")
    parser.add_argument("--output", required=True, help="output folder: one demo output per variant and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["tas-balanced", "random-batches", "uniform-pairs"], help="variants to run")
    parser.add_argument("--quick", action="store_true", help="start from the quick demo settings")
    parser.add_argument("--max-steps", type=int, help="training steps of every run (default: the demo's)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the seeds whose runs of every variant are finished")
    args = parser.parse_args()

    base = DemoConfig.quick() if args.quick else DemoConfig()
    if args.max_steps:
        base = base.with_training(max_steps=args.max_steps)
    output = Path(args.output)
    results: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:  # seeds outermost: a partial run already compares every variant
        for variant in args.variants:
            config = base.with_training(**VARIANTS[variant])
            run_dir = output / variant / f"seed{seed}"
            metrics = _finished_run(run_dir, config, seed)
            if metrics is None and args.report_only:
                continue
            if metrics is None:
                metrics = run_demo(
                    args.data, run_dir, seed=seed, config=config, work_dir=output / "work", show_progress_bar=False
                ).metrics
            results.setdefault(variant, {})[seed] = metrics
            print(f"{variant} seed {seed}: dev ndcg@10 {metrics['dev']['student_after']['ndcg@10']:.4f} "
                  f"({metrics['seconds']['total']:.0f} s)", flush=True)

    complete = [s for s in args.seeds if all(s in results.get(v, {}) for v in args.variants)]
    if len(complete) < len(args.seeds):
        print(f"finished for every variant: seeds {complete}; the others are left out of the report")
    args.seeds = complete
    record = summarise(results, args, base, output)
    (output / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, output / "ablation.png")


def summarise(results: dict[str, dict[int, dict]], args: argparse.Namespace, base: DemoConfig, output: Path) -> dict:
    """Print and return the per-seed figures, means, paired differences and significance tests."""
    seeds = args.seeds
    after = {v: [results[v][s]["dev"]["student_after"] for s in seeds] for v in results}
    before = results[args.variants[0]][seeds[0]]["dev"]["student_before"]
    teacher = results[args.variants[0]][seeds[0]]["dev"]["teacher"]
    print(f"\ndev split, {len(seeds)} seeds, {base.training.max_steps} steps of batch {base.training.batch_size} (mean ± sd)")
    print(f"{'variant':<16}" + "".join(f"{m:>18}" for m in METRICS) + "   ndcg@10 per seed")
    print(f"{'before training':<16}" + "".join(f"{before[m]:>18.4f}" for m in METRICS))
    print(f"{'teacher':<16}" + "".join(f"{teacher[m]:>18.4f}" for m in METRICS))
    summary = {}
    for variant, runs in after.items():
        summary[variant] = {m: {"mean": statistics.mean(r[m] for r in runs), "sd": _sd([r[m] for r in runs])}
                            for m in METRICS}
        print(f"{variant:<16}" + "".join(f"{summary[variant][m]['mean']:>10.4f} ± {summary[variant][m]['sd']:.4f}"
                                         for m in METRICS) + "   " + " / ".join(f"{r['ndcg@10']:.4f}" for r in runs))

    qrels = load_beir(args.data, "train").qrels
    tests = {}
    if REFERENCE in after:
        for variant in after:
            if variant == REFERENCE:
                continue
            tests[variant] = _paired_tests(results, REFERENCE, variant, seeds, qrels, output)
            t = tests[variant]
            print(f"\n{variant} - {REFERENCE}: nDCG@10 difference {t['mean_difference']:+.4f} "
                  f"(sd {t['sd_difference']:.4f} over seeds; per seed {' / '.join(f'{d:+.4f}' for d in t['per_seed'])})")
            print(f"  paired t-test over {len(seeds)} seeds: p = {t['seeds_t_test_p']:.3g}")
            print(f"  Fisher randomization over queries (ranx), pooled over seeds: p = {t['queries_pooled_p']:.3g}; "
                  f"per seed: {' / '.join(f'{p:.3g}' for p in t['queries_per_seed_p'])}")
    return {"config": dataclasses.asdict(base), "seeds": seeds, "before": before, "teacher": teacher,
            "runs": {v: {str(s): results[v][s]["dev"]["student_after"] for s in seeds} for v in results},
            "summary": summary, "tests": tests}


def _paired_tests(results: dict, reference: str, variant: str, seeds: list[int], qrels: dict, output: Path) -> dict:
    """Paired differences of ``variant`` against ``reference`` over seeds (t-test) and over queries (ranx)."""
    differences = [results[variant][s]["dev"]["student_after"]["ndcg@10"]
                   - results[reference][s]["dev"]["student_after"]["ndcg@10"] for s in seeds]
    seed_test = stats.ttest_rel([results[variant][s]["dev"]["student_after"]["ndcg@10"] for s in seeds],
                                [results[reference][s]["dev"]["student_after"]["ndcg@10"] for s in seeds])
    runs = {name: {s: read_trec_run(output / name / f"seed{s}" / "runs" / "dev-student-after.trec") for s in seeds}
            for name in (reference, variant)}
    dev_queries = set(runs[reference][seeds[0]])
    dev_qrels = {q: docs for q, docs in qrels.items() if q in dev_queries}

    def fisher_p(pick: list[int]) -> float:
        pooled_qrels = RanxQrels({f"{s}:{q}": docs for s in pick for q, docs in dev_qrels.items()})
        pooled = [RanxRun({f"{s}:{q}": docs for s in pick for q, docs in runs[name][s].items()}, name=name)
                  for name in (reference, variant)]
        report = compare(pooled_qrels, pooled, metrics=["ndcg@10"], stat_test="fisher", n_permutations=10_000,
                         max_p=0.05, random_seed=0)
        return float(report.comparisons[reference, variant]["ndcg@10"]["p_value"])

    return {
        "per_seed": differences,
        "mean_difference": statistics.mean(differences),
        "sd_difference": _sd(differences),
        "seeds_t_test_p": float(seed_test.pvalue),
        "queries_pooled_p": fisher_p(seeds),
        "queries_per_seed_p": [fisher_p([s]) for s in seeds],
    }


def plot(results: dict[str, dict[int, dict]], path: Path) -> None:
    """Dev nDCG@10 of every run: one column per variant, one marker per seed, the mean as a bar."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for x, (variant, runs) in enumerate(results.items()):
        values = [m["dev"]["student_after"]["ndcg@10"] for m in runs.values()]
        axes.bar(x, np.mean(values), color="lightgray", width=0.6)
        axes.scatter(np.full(len(values), x), values, color="tab:blue", zorder=3)
    axes.set_xticks(range(len(results)), list(results))
    axes.set(ylabel="dev nDCG@10", title="demo ablation: every seed (dots) and the mean (bars)")
    low = min(m["dev"]["student_after"]["ndcg@10"] for runs in results.values() for m in runs.values())
    axes.set_ylim(max(0.0, low - 0.05), None)
    figure.savefig(path, dpi=120)


def _finished_run(run_dir: Path, config: DemoConfig, seed: int) -> dict | None:
    """The metrics of an earlier run in ``run_dir`` with the same settings and seed, or None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    settings = json.loads(json.dumps(dataclasses.asdict(config)))  # as metrics.json holds them (tuples as lists)
    if metrics.get("seed") != seed or metrics.get("config") != settings:
        return None
    return metrics


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
