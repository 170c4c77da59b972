"""Which recipe trains the best student on the demo's data: st-tasb's recipes against plain MNRL, several seeds.

Every recipe trains the demo's student (layers 0, 2, 5 of all-MiniLM-L6-v2, mean pooling, 128 tokens) on the demo's
training queries for the same budget (steps, batch size, learning rate, warm-up, schedule), through ``st-tasb demo``'s
own code (:func:`st_tasb.cli.adapt_pipeline.run_adapt`, ``AdaptConfig.with_recipe``); only the recipe differs (see
``RECIPES`` in ``st_tasb/training/recipes.py``):

- ``mnrl``: the baseline, sentence-transformers' MultipleNegativesRankingLoss (cosine x 20) on the (query, judged
  positive) rows with ``NoDuplicatesBatchSampler``, no teacher (``st-tasb train --loss mnrl --random-batches``);
- ``mnrl-topic``: the same with :class:`st_tasb.TopicAwareBatchSampler` (``--loss mnrl``);
- ``paper``: TAS-Balanced as published (dot-product student, pairwise + in-batch Margin-MSE, teacher x 10);
- ``st-tasb``: the demo's default; the others that ``--recipes`` names.

The teacher's preparation (embedding the queries and passages, scoring the BM25 candidates, clustering) is shared
by every run through the work folder and reported separately, from the run that did it.

Printed and written to OUTPUT/comparison.json: dev metrics of every run, mean ± sd over seeds, and for every recipe
against ``mnrl`` the paired tests of ``seed_comparison.py`` on nDCG@10 and MRR@10 (t-test over seeds, ranx Fisher
randomization over queries, per seed and pooled); OUTPUT/comparison.png plots every seed.

    python benchmarks/compare_recipes.py --data ../shared/datasets/scifact-train --output recipes --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from seed_comparison import plot, run_variants, summarise

from st_tasb.cli.adapt_config import DEFAULT_RECIPE, AdaptConfig
from st_tasb.data.beir import load_beir
from st_tasb.training.recipes import RECIPES

REFERENCE = "mnrl"
PREPARATION = ("teacher embeddings", "mining and scoring", "clustering")
"""The demo's steps that prepare the teacher's work (shared by the runs through the work folder)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR folder (scifact-train)")
    parser.add_argument("--output", required=True, help="output folder: one demo output per recipe and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES),
                        default=[REFERENCE, "mnrl-topic", "paper", DEFAULT_RECIPE], help="recipes to run")
    parser.add_argument("--quick", action="store_true", help="the quick demo's data and budget")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the seeds whose runs of every recipe are finished")
    args = parser.parse_args()

    base = AdaptConfig.quick() if args.quick else AdaptConfig.demo()
    recipes = [REFERENCE, *(name for name in args.recipes if name != REFERENCE)]
    configs = {name: base.with_recipe(name) for name in recipes}
    output = Path(args.output)
    runs, fixed, _ = run_variants(args.data, output, configs, args.seeds, report_only=args.report_only)

    seeds = runs.complete_seeds(args.seeds)
    if len(seeds) < len(args.seeds):
        print(f"finished for every recipe: seeds {seeds}; the others are left out of the report")
    preparation = teacher_preparation(output, configs, args.seeds)
    if preparation:
        print(f"\nteacher preparation, once for all runs ({preparation['run']}): "
              + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in preparation["seconds"].items()))
    training = base.training
    heading = (f"dev split, {training.max_steps} steps of batch {training.batch_size}, lr {training.learning_rate:g}; "
               f"recipes against {REFERENCE}")
    record = summarise(runs, seeds, REFERENCE, load_beir(args.data, "train").qrels, heading, fixed)
    record["configs"] = {name: dataclasses.asdict(config) for name, config in configs.items()}
    record["teacher_preparation"] = preparation
    (output / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(runs, seeds, output / "comparison.png", "recipes on the demo: every seed (dots) and the mean (bars)")


def teacher_preparation(output: Path, configs: dict[str, AdaptConfig], seeds: list[int]) -> dict | None:
    """The seconds of the preparation steps of the run that did them (the one whose teacher embedding took longest),
    or None when no run's metrics are there."""
    timed = []
    for name in configs:
        for seed in seeds:
            path = output / name / f"seed{seed}" / "metrics.json"
            if path.is_file():
                laps = json.loads(path.read_text())["seconds"]
                timed.append((laps.get("teacher embeddings", 0.0), f"{name} seed {seed}", laps))
    if not timed:
        return None
    _, run, laps = max(timed, key=lambda entry: entry[0])
    return {"run": run, "seconds": {step: laps.get(step, 0.0) for step in PREPARATION}}


if __name__ == "__main__":
    main()
