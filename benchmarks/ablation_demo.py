"""Ablation of the demo: TAS-Balanced against random batches and uniform pairs, same budget, several seeds.

Every variant trains the same student with the same teachers, data, steps, batch size and learning rate; only
the batch composition (topic clusters or random queries) and the pair sampling (margin-balanced or uniform)
change. The teacher embeddings, scores and the untrained student's evaluation are computed once and shared
by all runs. A run whose OUTPUT/<variant>/seed<N>/metrics.json already records the same settings is reused,
so an interrupted ablation resumes and more seeds can be added later.

Hard margins (``--min-margins``): TAS-Balanced whose pairs with a teacher margin below a threshold are left out
before binning (``TrainingSettings.min_margin``). A threshold is a number, or ``pN``: the N-th percentile of the
margins of the demo's teacher table (computed and printed before any run). The variants are named
``min-margin-<threshold as given>``.

Printed and written to OUTPUT/ablation.json: dev metrics of every run, their mean and sample standard deviation
over the seeds, and for each variant against TAS-Balanced the paired tests of ``seed_comparison.py`` (a t-test
over seeds, and ranx's Fisher randomization test over queries). A plot of nDCG@10 per seed and variant goes to
OUTPUT/ablation.png.

    python benchmarks/ablation_demo.py --data ../shared/datasets/scifact-train --output ablation --seeds 0 1 2 3 4
    python benchmarks/ablation_demo.py --data ../shared/datasets/scifact-train --output hard-margin \
        --variants tas-balanced --min-margins 0 p10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from seed_comparison import plot, run_variants, summarise

from st_tasb.cli.adapt_config import AdaptConfig
from st_tasb.cli.adapt_inputs import prepare_inputs
from st_tasb.data.beir import load_beir
from st_tasb.training.recipes import RECIPES

VARIANTS = {
    "tas-balanced": {"topic_aware": True, "balanced": True},
    "random-batches": {"topic_aware": False, "balanced": True},
    "uniform-pairs": {"topic_aware": True, "balanced": False},
    "random-uniform": {"topic_aware": False, "balanced": False},
}
REFERENCE = "tas-balanced"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR folder (scifact-train)")
    parser.add_argument("--output", required=True, help="output folder: one demo output per variant and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["tas-balanced", "random-batches", "uniform-pairs"], help="variants to run")
    parser.add_argument("--min-margins", nargs="*", default=[],
                        help="hard-margin variants of TAS-Balanced: thresholds, numbers or pN (N-th percentile of margins)")
    parser.add_argument("--recipe", choices=list(RECIPES), help="the recipe whose components are ablated (default: "
                        "the demo's)")
    parser.add_argument("--quick", action="store_true", help="start from the quick demo settings")
    parser.add_argument("--max-steps", type=int, help="training steps of every run (default: the demo's)")
    parser.add_argument("--reference-runs", metavar="DIR",
                        help="take the reference runs (the recipe with topic-aware batches and balanced pairs) missing "
                        "from OUTPUT from this folder of earlier runs (DIR/seedN, e.g. recipes/st-tasb or an earlier "
                        "ablation's tas-balanced), as they are; the report names every run so taken")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the seeds whose runs of every variant are finished")
    args = parser.parse_args()

    base = AdaptConfig.quick() if args.quick else AdaptConfig.demo()
    if args.recipe:
        base = base.with_recipe(args.recipe)
    if args.max_steps:
        base = base.with_training(max_steps=args.max_steps)
    output = Path(args.output)
    configs = {variant: base.with_training(**VARIANTS[variant]) for variant in args.variants}
    if args.min_margins:
        thresholds = margin_thresholds(args.data, base, output / "work", args.min_margins)
        for spec, value in thresholds.items():
            configs[f"min-margin-{spec}"] = base.with_training(**VARIANTS[REFERENCE], min_margin=value)
    earlier = {REFERENCE: Path(args.reference_runs)} if args.reference_runs else None
    runs, fixed, reused = run_variants(args.data, output, configs, args.seeds, report_only=args.report_only,
                                       earlier_runs=earlier)

    seeds = runs.complete_seeds(args.seeds)
    if len(seeds) < len(args.seeds):
        print(f"finished for every variant: seeds {seeds}; the others are left out of the report")
    heading = f"dev split, {base.training.max_steps} steps of batch {base.training.batch_size}"
    record = summarise(runs, seeds, REFERENCE, load_beir(args.data, "train").qrels, heading, fixed)
    record["configs"] = {variant: dataclasses.asdict(config) for variant, config in configs.items()}
    record["reference_runs_taken_from_earlier_ablation"] = reused
    (output / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(runs, seeds, output / "ablation.png", "demo ablation: every seed (dots) and the mean (bars)")


def margin_thresholds(data: str, config: AdaptConfig, work_dir: Path, specs: list[str]) -> dict[str, float]:
    """The hard-margin thresholds: numbers as given, ``pN`` as the N-th percentile of the teacher table's margins.

    Prints the margin distribution and what each threshold removes (the table does not depend on the seed).
    """
    table = prepare_inputs(data, config, seed=0, work_dir=work_dir, show_progress_bar=False).table
    margins = np.asarray(table.dataset["margin"])
    print("teacher margins of the training pairs: " + ", ".join(
        f"p{q} {np.percentile(margins, q):.3f}" for q in (0, 1, 5, 10, 25, 50, 75, 90, 100)))
    thresholds = {}
    for spec in specs:
        value = float(np.percentile(margins, float(spec[1:]))) if spec.startswith("p") else float(spec)
        thresholds[spec] = round(value, 4)
        print(f"  {spec}: {table.drop_small_margins(thresholds[spec])[1]}")
    return thresholds


if __name__ == "__main__":
    main()
