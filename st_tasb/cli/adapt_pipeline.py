"""The whole pipeline on a user's documents: ``st-tasb adapt`` / :func:`run_adapt`; ``st-tasb demo`` is the same
pipeline with the demo's preset (:meth:`AdaptConfig.demo`) on SciFact.

Steps (every one a public st-tasb function; every prepared step is kept in the work folder and reused):

1. the dev queries: the judged queries of a split of their own (``dev_split``), or a fixed share of the judged
   training queries held out by a hash of the query id (the split does not depend on the seed or the file order);
   a bare corpus has none (nothing is evaluated);
2. the training queries: the judged ones (unless ``judged=False``: the corpus alone) and a pseudo-query made from
   every document (:func:`~st_tasb.prepare.pseudo_queries.make_pseudo_queries`);
3. the teachers: the starting model itself by default, or the named bi-encoders, their means when several (the
   paper's T2, :class:`~st_tasb.teachers.EnsembleTeacher`). Each embeds every training query and passage once
   and keeps them in the work folder by content (:func:`~st_tasb.training.inbatch_teachers.cached_embeddings`:
   another setting over the same corpus reuses the passages); these embeddings serve as
   - the **pairwise teacher**: the scores of BM25-mined candidates (:func:`~st_tasb.prepare.mining.mine_candidates`,
     :func:`~st_tasb.prepare.scoring.score_candidates`),
   - the **in-batch teacher**: cached scores of every query of a batch against every passage of the batch,
   - the query embeddings of the **topic clusters** (:meth:`~st_tasb.prepare.clusters.QueryClusters.fit_embeddings`;
     several teachers' embeddings side by side);
4. the student: the starting model itself (``student_layers=None``: a better model of the same size), or some of its
   layers (:func:`~st_tasb.training.student.make_student`: a smaller, faster model; the demo keeps 3 of 6), scoring
   by the recipe's similarity (the default st-tasb recipe: cosine x 20; the paper's: dot product);
5. training by the recipe (:func:`~st_tasb.training.trainer.train`; the default st-tasb recipe: topic-aware batches
   of margin-balanced pairs, in-batch KL distillation from the teacher plus a contrastive term on the labels, no
   pairwise Margin-MSE; ``recipe="paper"``: the dual-teacher Margin-MSE loss as published);
6. evaluation of the student before and after training, and of the teacher, on the dev queries
   (faiss, trec_eval metrics), TREC runs, the model card, ``metrics.json`` and PNG plots.

The teachers' cosine scores lie in [-1, 1]; they are multiplied by the recipe's ``teacher_scale`` (st-tasb: 20, the
student's own cosine scale; paper: 10 for the dot-product student) so that the scores the student matches are on a
scale it can reach.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from st_tasb.cli.adapt_config import AdaptConfig
from st_tasb.cli.adapt_inputs import AdaptInputs, StepClock, check_work_dir, prepare_inputs, settings_tag
from st_tasb.data import files
from st_tasb.data.arrow import rows
from st_tasb.data.beir import BeirData, load_corpus
from st_tasb.data.files import write_json
from st_tasb.data.models import check_model_name, default_device, load_sentence_transformer
from st_tasb.data.runs import read_trec_run, write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.publish.plots import (
    plot_batch_composition,
    plot_cluster_sizes,
    plot_dev_curve,
    plot_encoding_speed,
    plot_loss_curves,
    plot_margins,
    plot_metrics,
)
from st_tasb.retrieval.evaluation import RetrievalEvaluator, evaluate_model
from st_tasb.retrieval.metrics import evaluate_run
from st_tasb.retrieval.search import search_embeddings
from st_tasb.teachers import EmbeddingCache
from st_tasb.training.model_card import TASBModelCard, write_model_card
from st_tasb.training.recipes import KINDS, RECIPES
from st_tasb.training.student import make_student
from st_tasb.training.topic_batches import BatchComposition
from st_tasb.training.trainer import TRAINING_LOG_FILE, TrainingRun, train

RUN_RECORD = "st_tasb_adapt.json"
"""Written first into a run's output folder (seed, data, settings): marks the folder as the pipeline's own."""
DEV_RUNS = ("student_before", "student_after", "teacher")
"""The dev evaluations of a run, in the order metrics.json and the card list them."""


@dataclass
class AdaptResult:
    """What :func:`run_adapt` produced.

    Attributes:
        metrics: the content of ``metrics.json`` (dev metrics before / after / teacher, gains, timings, settings).
        model_dir: the trained model folder (with its card).
        plots: the PNG files written.
    """

    metrics: dict[str, Any]
    model_dir: Path
    plots: list[Path]


def run_adapt(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    config: AdaptConfig | None = None,
    seed: int = 0,
    split: str = "train",
    work_dir: str | Path | None = None,
    show_progress_bar: bool = True,
    overwrite: bool = False,
) -> AdaptResult:
    """Run the whole pipeline and write the model, ``metrics.json``, runs and plots to ``output_dir``.

    Args:
        data_dir: a BEIR folder (e.g. ``../shared/datasets/scifact-train``), or a folder holding only a
            ``corpus.jsonl`` (the corpus alone: nothing is evaluated).
        output_dir: where everything goes: ``model/`` (a SentenceTransformer folder with its card),
            ``metrics.json``, ``runs/*.trec``, ``plots/*.png`` and ``work/`` (teacher scores, cache).
        config: the settings (default: :class:`AdaptConfig`, adapting all-MiniLM-L6-v2 to the data).
        seed: seed of the student's training (batches, initialisation); the train/dev split is fixed.
        split: the qrels split of the training queries (and of the held-out dev queries without ``dev_split``).
        work_dir: where the teacher embeddings and scores are kept (default: ``output_dir/work``); runs that
            share it (other seeds, ablations) reuse them. Their folders are named after the settings that
            determine them; a work folder holds the steps of one data set only.
        show_progress_bar: show progress bars.
        overwrite: write into an ``output_dir`` that holds files the pipeline did not write (it records itself in
            ``st_tasb_adapt.json`` first, so its own folder is always accepted again).

    Returns:
        An :class:`AdaptResult`.

    Raises:
        FileNotFoundError, st_tasb.data.beir.DataFormatError: for a missing or malformed data folder.
        ValueError: if the split leaves too few queries to train on, or ``work_dir`` holds another data set's steps.
        FileExistsError: if ``output_dir`` holds files the pipeline did not write, and not ``overwrite``.
        OSError: if the starting model or a teacher does not load, naming it.
    """
    config = config or AdaptConfig()
    output_dir = Path(output_dir)
    files.check_output(output_dir, "the output folder", record=RUN_RECORD, overwrite=overwrite)
    work_dir = Path(work_dir) if work_dir is not None else output_dir / "work"
    if not (Path(data_dir) / "corpus.jsonl").is_file():  # before anything is written: the data, the models
        load_corpus(data_dir)  # names the missing folder or corpus.jsonl
    for model in dict.fromkeys((config.starting_model, *config.teacher_models)):
        check_model_name(model)
    check_work_dir(work_dir, Path(data_dir))
    write_json(output_dir / RUN_RECORD, {"seed": seed, "data": str(data_dir), "config": dataclasses.asdict(config)})
    clock = StepClock()
    inputs = prepare_inputs(data_dir, config, seed=seed, split=split, work_dir=work_dir,
                            show_progress_bar=show_progress_bar, clock=clock)
    student = make_student(config.starting_model, config.student_layers, config.pooling, config.max_seq_length,
                           device=default_device()) if config.student_layers is not None else _starting_student(config)
    student.similarity_fn_name = config.training.similarity  # evaluated before as after training
    runs_dir = output_dir / "runs"
    dev = {}
    if inputs.dev_data.qrels:  # the untrained student does not depend on the seed: its evaluation is kept in work
        dev["student_before"] = _evaluate(
            student, inputs.dev_data, runs_dir / "dev-student-before.trec", show_progress_bar,
            reuse=work_dir / f"student-before-{settings_tag(inputs.texts_tag, config.starting_model, config.student_layers, config.pooling, student.similarity_fn_name)}",
        )
        dev["teacher"] = _evaluate_cached(inputs.cache, inputs.training_data, inputs.dev_data, runs_dir / "dev-teacher.trec")
    speed = {"student": encoding_speed(student, inputs.data.corpus),
             "teacher": sum(encoding_speed(member.encoder, inputs.data.corpus) ** -1 for member in inputs.members) ** -1}
    clock.lap("evaluation before")

    curve = (RetrievalEvaluator.from_beir(inputs.dev_data, name="dev")
             if config.training.eval_steps and inputs.dev_data.qrels else None)
    training = train(
        student, inputs.table, inputs.training_data.queries, inputs.training_data.corpus, output_dir / "model",
        clusters=inputs.clusters, inbatch_teacher=inputs.teacher, settings=config.training_settings(seed),
        local_files_only=True, card=_card(config, Path(data_dir), split, inputs), evaluator=curve,
    )
    clock.lap("training")

    if inputs.dev_data.qrels:
        dev["student_after"] = _evaluate(training.model, inputs.dev_data, runs_dir / "dev-student-after.trec",
                                         show_progress_bar)
        clock.lap("evaluation after")
        training.card.evaluation = {f"dev, {name.replace('_', ' ')}": dev[name] for name in DEV_RUNS}
        write_model_card(training.model_dir, training.card)
    metrics = _metrics(config, seed, inputs, training, dev, speed, clock)
    plots = _plots(output_dir / "plots", inputs.clusters, training, metrics)
    metrics["seconds"]["total"] = clock.total()
    write_json(output_dir / "metrics.json", metrics)
    write_json(output_dir / TRAINING_LOG_FILE, training.log_history)
    return AdaptResult(metrics=metrics, model_dir=training.model_dir, plots=plots)


def _starting_student(config: AdaptConfig) -> SentenceTransformer:
    """The starting model itself as the student, its texts cut at ``max_seq_length`` or its own cap if that is
    lower (as the teachers cut them: a model never reads more tokens than it was saved to read)."""
    student = load_sentence_transformer(config.starting_model, device=default_device())
    student.max_seq_length = min(config.max_seq_length, student.max_seq_length)
    return student


def _metrics(
    config: AdaptConfig, seed: int, inputs: AdaptInputs, training: TrainingRun, dev: dict[str, dict[str, float]],
    speed: dict[str, float], clock: StepClock,
) -> dict[str, Any]:
    """The content of ``metrics.json``: dev metrics and gains, the dev curve, the counts of what the student trained on
    (the pairs and batches of the run itself), the encoding speeds, the config and the timings."""
    settings = training.settings
    clusters = KINDS[settings.loss].batch_clusters(training.parts, settings, settings.topic_aware)
    train_qrels = inputs.train_qrels
    return {
        "recipe": config.recipe,
        "dev": {name: dev[name] for name in DEV_RUNS} if dev else None,
        "gain": {name: dev["student_after"][name] - dev["student_before"][name] for name in dev["student_after"]}
        if dev else None,
        "dev_curve": [{"step": 0, **dev["student_before"]}, *_dev_curve(training.log_history)]
        if settings.eval_steps and dev else None,
        "queries": {
            "train": len(train_qrels), "dev": len(inputs.dev_data.qrels),
            "pseudo": len(inputs.training_data.qrels) - len(train_qrels), "trained_on": training.table.num_queries,
        },
        "passages": len(inputs.data.corpus),
        "training_passages": len(inputs.training_data.corpus),
        "training_pairs": len(training.table),
        "clusters": inputs.clusters.stats(settings.batch_size),
        "batch_composition": dataclasses.asdict(BatchComposition.of(clusters)),
        "encoding_passages_per_second": speed,
        "steps": training.global_step,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "seconds": clock.laps,
    }


def _card(config: AdaptConfig, data_dir: Path, split: str, inputs: AdaptInputs) -> TASBModelCard:
    """What the model card says about the run's teachers and data."""
    data, training_data, train_qrels = inputs.data, inputs.training_data, inputs.train_qrels
    teachers = [config.teacher_name(model) for model in config.teacher_models]
    teacher = teachers[0] if len(teachers) == 1 else "the mean of " + " and ".join(teachers)
    start = config.teacher_name(config.starting_model)
    if config.dev_split is not None:
        dev = f"{len(inputs.dev_data.qrels)} judged queries of qrels split {config.dev_split!r}"
    else:
        dev = f"{len(inputs.dev_data.qrels)} judged queries of split {split!r}, held out by a hash of the query id"
    return TASBModelCard(
        teachers={
            "pairwise": f"{teacher}: cosine similarity x {config.teacher_scale:g} of BM25-mined candidates (queries "
                        f"cut at {config.teacher_query_length} tokens, passages at {config.max_seq_length})",
            "in-batch": f"{teacher}: the same scores from cached embeddings (BiEncoderTeacher)",
        },
        data={
            "dataset": f"{data_dir.name}, {len(data.corpus):,} passages",
            "judged training queries": (f"{len(train_qrels):,} of split {split!r}" if config.judged
                                 else "none judged (the corpus alone)"),
            "dev queries": dev,
            "pseudo-queries": f"{len(training_data.qrels) - len(train_qrels):,} ({config.pseudo_queries or 'none'})",
            "candidates": f"BM25 (bm25s) top {config.top_k}, at most {config.max_negatives} negatives per query",
            "student": (f"layers {list(config.student_layers)} of {start}, {config.pooling} pooling, "
                        if config.student_layers is not None else f"{start} itself, ")
                       + config.training.loss_terms().describe_similarity(),
            "recipe": f"{config.recipe}: {RECIPES[config.recipe].description}",
        },
    )


def _dev_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The dev metrics the Trainer logged at each evaluation, as ``{"step": N, "ndcg@10": ..., ...}``."""
    prefix = "eval_dev_"
    return [
        {"step": entry["step"], **{key.removeprefix(prefix): value for key, value in entry.items() if key.startswith(prefix)}}
        for entry in log_history
        if f"{prefix}ndcg@10" in entry
    ]


def encoding_speed(model: SentenceTransformer, corpus: TextStore, n_passages: int = 128, batch_size: int = 64) -> float:
    """Passages per second that ``model`` encodes (the first ``n_passages`` of ``corpus``, after one warm-up batch)."""
    texts = corpus.texts(np.arange(min(n_passages, len(corpus))))
    model.encode(texts[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size)
    return round(len(texts) / (time.perf_counter() - start), 1)


def _plots(folder: Path, clusters: QueryClusters, training: TrainingRun, metrics: dict[str, Any]) -> list[Path]:
    """The run's figures: cluster sizes, batch composition (the run's batches, topic-aware against random), margins
    of the pairs trained on and their bins, loss curves, dev metrics, encoding speed and, with ``eval_steps``, the dev
    curve."""
    settings, dev = training.settings, metrics["dev"]
    kind = KINDS[settings.loss]
    pairs = rows(training.table.dataset)
    query_index = np.unique(pairs.column("query_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    margin = pairs.column("margin").to_numpy()
    order = np.lexsort((margin, query_index))  # grouped by query, margins ascending, as the bins are built
    plots = [
        plot_cluster_sizes(clusters.sizes(), folder / "cluster_sizes.png", batch_size=settings.batch_size),
        plot_batch_composition(
            {name: BatchComposition.top_shares(kind.batch_clusters(training.parts, settings, topic_aware))
             for name, topic_aware in (("TAS-B", True), ("random batches", False))},
            folder / "batch_composition.png",
        ),
        plot_margins(query_index[order], margin[order], folder / "margins.png", n_bins=settings.n_bins,
                     seed=metrics["seed"]),
        plot_loss_curves(training.log_history, folder / "loss.png"),
    ]
    if dev is None:  # a bare corpus: nothing evaluated
        return plots
    plots += [
        plot_metrics(
            {"student before": dev["student_before"], "student after": dev["student_after"], "teacher": dev["teacher"]},
            folder / "dev_metrics.png",
        ),
        plot_encoding_speed(
            metrics["encoding_passages_per_second"],
            {"student": dev["student_after"]["ndcg@10"], "teacher": dev["teacher"]["ndcg@10"]},
            folder / "encoding_speed.png",
        ),
    ]
    if metrics["dev_curve"]:
        plots.append(plot_dev_curve(metrics["dev_curve"], folder / "dev_curve.png",
                                    reference={"teacher": dev["teacher"]["ndcg@10"]}))
    return plots


def _evaluate(
    model: SentenceTransformer, data: BeirData, run_path: Path, show_progress_bar: bool, reuse: Path | None = None
) -> dict[str, float]:
    """Retrieve for the judged queries, write the TREC run and return its metrics.

    With ``reuse``, a run written there earlier is copied instead of retrieving again (else it is written there).
    """
    if reuse is None or not (reuse / run_path.name).is_file():
        metrics = evaluate_model(model, data, run_path=run_path, show_progress_bar=show_progress_bar)
        if reuse is not None:
            reuse.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_path, reuse / run_path.name)
        return metrics
    run = read_trec_run(reuse / run_path.name)
    write_trec_run(run, run_path, tag=run_path.stem)
    return evaluate_run(run, data.qrels)


def _evaluate_cached(
    cache: EmbeddingCache, cached: BeirData, data: BeirData, run_path: Path, top_k: int = 1000
) -> dict[str, float]:
    """Exact inner-product retrieval over cached embeddings (the teacher), evaluated like the student.

    ``cache`` rows follow ``cached``'s query and corpus stores; ``data`` holds the evaluation corpus and queries.
    """
    queries = data.judged_queries()
    hits = search_embeddings(
        cache.rows("queries", cached.queries.positions(queries.ids)),
        cache.rows("corpus", cached.corpus.positions(data.corpus.ids)),
        data.corpus,
        top_k=top_k,
    )
    run = hits.to_run(queries, data.corpus)
    write_trec_run(run, run_path, tag=run_path.stem)
    return evaluate_run(run, data.qrels)
