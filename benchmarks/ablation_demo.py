"""Ablation of the demo: TAS-Balanced against random batches and uniform pairs, same budget, several seeds.

Every variant trains the same student with the same teachers, steps, batch size and learning rate; only
the batch composition (topic clusters or random queries) and the pair sampling (margin-balanced or
uniform) change. The teacher embeddings and scores are computed once and shared by all runs. A run whose
OUTPUT/<variant>/seed<N>/metrics.json already records the same settings is reused, so an interrupted
ablation resumes and more seeds can be added later. Prints the dev metrics as mean and sample standard
deviation over the seeds, and writes them to OUTPUT/ablation.json.

    python benchmarks/ablation_demo.py --data ../shared/datasets/scifact-train --output ablation --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from st_tasb.demo import DemoConfig, run_demo

VARIANTS = {
    "tas-balanced": {"random_batches": False, "uniform_pairs": False},
    "random-batches": {"random_batches": True, "uniform_pairs": False},
    "uniform-pairs": {"random_batches": False, "uniform_pairs": True},
    "random-uniform": {"random_batches": True, "uniform_pairs": True},
}
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR folder (scifact-train)")
    parser.add_argument("--output", required=True, help="output folder: one demo output per variant and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="variants to run")
    parser.add_argument("--quick", action="store_true", help="start from the quick demo settings")
    parser.add_argument("--max-steps", type=int, help="training steps of every run (default: the demo's)")
    args = parser.parse_args()

    base = DemoConfig.quick() if args.quick else DemoConfig()
    if args.max_steps:
        base = dataclasses.replace(base, max_steps=args.max_steps)
    output = Path(args.output)
    results: dict[str, list[dict[str, float]]] = {}
    before = None
    for seed in args.seeds:  # seeds outermost: a partial run already compares every variant
        for variant in args.variants:
            config = dataclasses.replace(base, **VARIANTS[variant])
            run_dir = output / variant / f"seed{seed}"
            metrics = _finished_run(run_dir, config, seed)
            if metrics is None:
                result = run_demo(
                    args.data, run_dir, seed=seed, config=config, work_dir=output / "work", show_progress_bar=False
                )
                metrics = result.metrics
            results.setdefault(variant, []).append(metrics["dev"]["student_after"])
            before = metrics["dev"]["student_before"]
            print(f"{variant} seed {seed}: dev ndcg@10 {metrics['dev']['student_after']['ndcg@10']:.4f}", flush=True)

    summary = {
        variant: {m: {"mean": statistics.mean(r[m] for r in runs), "sd": _sd([r[m] for r in runs])} for m in METRICS}
        for variant, runs in results.items()
    }
    print(f"\ndev split, {len(args.seeds)} seeds, {base.max_steps} steps of batch {base.batch_size} (mean ± sd)")
    print(f"{'variant':<16}" + "".join(f"{m:>18}" for m in METRICS))
    print(f"{'before training':<16}" + "".join(f"{before[m]:>18.4f}" for m in METRICS))
    for variant, values in summary.items():
        print(f"{variant:<16}" + "".join(f"{values[m]['mean']:>10.4f} ± {values[m]['sd']:.4f}" for m in METRICS))
    record = {"config": dataclasses.asdict(base), "seeds": args.seeds, "before": before, "runs": results, "summary": summary}
    (output / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")


def _finished_run(run_dir: Path, config: DemoConfig, seed: int) -> dict | None:
    """The metrics of an earlier run in ``run_dir`` with the same settings and seed, or None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    if metrics.get("seed") != seed or metrics.get("config") != dataclasses.asdict(config):
        return None
    return metrics


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
