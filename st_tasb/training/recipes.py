"""The recipes: each named way to train a student, defined once, with what it builds for a run.

A :class:`Recipe` fixes the loss kind, the loss terms (:class:`~st_tasb.training.terms.LossTerms`) and whether
batches are topic-aware and pairs balanced. Its kind (:class:`TeacherDistillation` or :class:`LabelsOnly`) builds
the run's parts from the table and texts: the training dataset, the batch sampler, the loss, the collator, the
batch composition the demo reports, and the card's settings and teachers. Nothing else in st-tasb asks which kind
of loss a run trains with.

``st-tasb train --recipe NAME``, ``TrainingSettings(recipe=NAME)``, ``st-tasb demo --recipe NAME`` and the
benchmarks read :data:`RECIPES`; flags and keyword arguments override single fields. Adding a recipe that combines
existing terms is one entry of :data:`RECIPES` (docs/architecture.md, "How to add a recipe").

This module does not load torch when imported (``st-tasb train --help`` reads the recipe names): the parts are
imported when a run is built.

Example:
    >>> print(RECIPES["st-tasb"].terms.describe(), "|", RECIPES["st-tasb"].terms.describe_similarity())
    in-batch KL divergence x 1 + contrastive (labels) x 1 | cosine x 20
    >>> recipe_named("best")
    Traceback (most recent call last):
    ...
    ValueError: unknown recipe 'best'; choose one of st-tasb, paper, mnrl, mnrl-topic
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from st_tasb.training.terms import LossTerms

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from st_tasb.data.texts import TextStore
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable
    from st_tasb.teachers import InBatchTeacher

LossKind = Literal["tas-b", "mnrl"]


class RunSettings(Protocol):
    """What a kind reads of a run's settings (:class:`~st_tasb.training.settings.TrainingSettings` has it all; the
    settings resolve their recipe here, so this module names them by what it uses)."""

    batch_size: int
    seed: int
    topic_aware: bool
    gather_across_devices: bool
    gradcache_mini_batch_size: int | None

    def loss_terms(self) -> LossTerms:
        """The loss terms of the run."""

    def sampler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the TAS-B batch sampler."""


@dataclass
class RunParts:
    """What a recipe's kind builds for one training run.

    Attributes:
        dataset: the training rows (the Trainer's ``train_dataset``).
        batch_sampler: the batch sampler class or partial (the training arguments' ``batch_sampler``).
        loss: the loss module.
        collator: the data collator, or ``None`` for sentence-transformers' own.
        topics: the mnrl rows' anchor text -> cluster (``None`` for the teachers' rows, whose dataset holds them).
    """

    dataset: Dataset
    batch_sampler: Any
    loss: nn.Module
    collator: Any = None
    topics: dict[str, int] | None = None


class TrainingKind(ABC):
    """How a kind of loss trains: the parts it builds, what a batch scores, and what the card says of it.

    Attributes:
        uses_teacher: whether the loss learns from the teachers (else from the labels alone).
    """

    uses_teacher: bool = True

    @abstractmethod
    def parts(
        self, student: SentenceTransformer, table: TeacherScoreTable, queries: TextStore, corpus: TextStore,
        clusters: QueryClusters | None, teacher: InBatchTeacher | None, settings: RunSettings,
    ) -> RunParts:
        """The dataset (with the clusters' topics whenever clusters are given), sampler, loss and collator."""

    @abstractmethod
    def in_batch_passages(self, rows: int) -> int:
        """How many passages each query is scored against in a batch of ``rows`` rows."""

    @abstractmethod
    def batch_clusters(self, parts: RunParts, settings: RunSettings, topic_aware: bool) -> np.ndarray:
        """The cluster of every query of every batch of the first epoch (``[batches, batch_size]``; -1: none) that
        ``parts`` give with topic-aware or random batches: how topical the batches are (``BatchComposition.of``)."""

    @abstractmethod
    def card(
        self, settings: dict[str, Any], table: TeacherScoreTable, teacher: InBatchTeacher | None
    ) -> dict[str, str]:
        """The card's teachers (role -> description); blanks the ``settings`` keys this kind does not use."""

    @abstractmethod
    def describe(self, settings: Mapping[str, Any]) -> str:
        """How a model was trained, in words, from the settings its card recorded (batches, pairs, loss terms)."""


class TeacherDistillation(TrainingKind):
    """Loss kind ``tas-b``: (query, positive, negative) rows with the table's margins, sampled topic-aware and
    balanced by :class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler`, and the teacher distillation
    loss with the settings' terms (GradCache-wrapped with ``gradcache_mini_batch_size``)."""

    def parts(
        self, student: SentenceTransformer, table: TeacherScoreTable, queries: TextStore, corpus: TextStore,
        clusters: QueryClusters | None, teacher: InBatchTeacher | None, settings: RunSettings,
    ) -> RunParts:
        from st_tasb.training import cached_losses, losses
        from st_tasb.training.collator import TASBDataCollator
        from st_tasb.training.dataset import build_training_dataset
        from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

        terms = settings.loss_terms()
        if teacher is None:
            terms = dataclasses.replace(terms, alpha=0.0)
        # the paper's form goes by the paper's name, so that the card (which names the class) says what is computed
        plain, cached = ((losses.DualTeacherMarginMSELoss, cached_losses.CachedDualTeacherMarginMSELoss)
                         if terms.is_margin_mse() else
                         (losses.TeacherDistillationLoss, cached_losses.CachedTeacherDistillationLoss))
        loss: nn.Module = plain(student, teacher, terms, gather_across_devices=settings.gather_across_devices)
        if settings.gradcache_mini_batch_size is not None:
            loss = cached(loss, mini_batch_size=settings.gradcache_mini_batch_size)
        return RunParts(
            dataset=build_training_dataset(table, queries, corpus, clusters, with_indices=True),
            batch_sampler=partial(TopicAwareBalancedBatchSampler, **settings.sampler_kwargs()),
            loss=loss,
            collator=TASBDataCollator.for_model(student),
        )

    def in_batch_passages(self, rows: int) -> int:
        return 2 * rows

    def batch_clusters(self, parts: RunParts, settings: RunSettings, topic_aware: bool) -> np.ndarray:
        sampler = parts.batch_sampler(parts.dataset, settings.batch_size, drop_last=False, seed=settings.seed,
                                      topic_aware=topic_aware)
        return sampler.index.query_cluster[sampler.epoch_queries(0)]

    def card(
        self, settings: dict[str, Any], table: TeacherScoreTable, teacher: InBatchTeacher | None
    ) -> dict[str, str]:
        if teacher is None:
            settings["alpha"] = None
        return {"pairwise": _describe_table_teacher(table), "in-batch": _describe_teacher(teacher)}

    def describe(self, settings: Mapping[str, Any]) -> str:
        has_teacher = settings.get("alpha") is not None
        terms = LossTerms.of(SimpleNamespace(**{**settings, "alpha": settings.get("alpha") or 0.0}))
        batches = ("every batch holds the queries of one topic cluster (topic-aware sampling)" if settings.get("topic_aware")
                   else "batches of randomly drawn queries (topic-aware sampling off)")
        if settings.get("separate_positives"):
            batches += ", the queries that share a positive spread over different batches"
        pairs = ("drawn evenly from the bins of its teacher margins (balanced sampling)" if settings.get("balanced")
                 else "drawn uniformly from its teacher-scored pairs (balanced sampling off)")
        return (f"{batches}, each query with one (positive, negative) pair {pairs}, and the loss is "
                f"{terms.describe(has_teacher)}")


class LabelsOnly(TrainingKind):
    """Loss kind ``mnrl``: the baseline without a teacher, sentence-transformers' MultipleNegativesRankingLoss on the
    table's distinct (query, positive) rows, with topic-aware batches (``TopicAwareBatchSampler``) or random ones
    with no text twice (``NoDuplicatesBatchSampler``)."""

    uses_teacher = False

    def parts(
        self, student: SentenceTransformer, table: TeacherScoreTable, queries: TextStore, corpus: TextStore,
        clusters: QueryClusters | None, teacher: InBatchTeacher | None, settings: RunSettings,
    ) -> RunParts:
        from st_tasb.data.compat import MultipleNegativesRankingLoss
        from st_tasb.training.dataset import build_pair_dataset
        from st_tasb.training.losses import SIMILARITIES

        if settings.gradcache_mini_batch_size is not None:
            raise ValueError("gradcache_mini_batch_size is for the tas-b loss; for mnrl use sentence-transformers' "
                             "CachedMultipleNegativesRankingLoss in your own Trainer")
        dataset, topics = build_pair_dataset(table, queries, corpus, clusters)
        terms = settings.loss_terms()
        loss = MultipleNegativesRankingLoss(student, similarity_fct=SIMILARITIES[terms.similarity],
                                            scale=terms.similarity_scale,
                                            gather_across_devices=settings.gather_across_devices)
        return RunParts(dataset=dataset, batch_sampler=pair_batch_sampler(topics if settings.topic_aware else None),
                        loss=loss, topics=topics)

    def in_batch_passages(self, rows: int) -> int:
        return rows

    def batch_clusters(self, parts: RunParts, settings: RunSettings, topic_aware: bool) -> np.ndarray:
        import numpy as np

        topics = parts.topics or {}
        sampler = pair_batch_sampler(parts.topics if topic_aware else None)(
            parts.dataset, settings.batch_size, True, valid_label_columns=[], seed=settings.seed)
        cluster = np.array([topics.get(anchor, -1) for anchor in parts.dataset["anchor"]])
        return cluster[np.array([list(batch) for batch in sampler])]

    def describe(self, settings: Mapping[str, Any]) -> str:
        batches = ("topic-aware batches (TopicAwareBatchSampler, one topic cluster each)" if settings.get("topic_aware")
                   else "random batches with no text twice (NoDuplicatesBatchSampler)")
        return ("no teacher: the loss is sentence-transformers' MultipleNegativesRankingLoss on the (query, positive) "
                f"rows, every other passage of the batch a negative, in {batches}")

    def card(
        self, settings: dict[str, Any], table: TeacherScoreTable, teacher: InBatchTeacher | None
    ) -> dict[str, str]:
        settings.update(alpha=None, n_bins=None, balanced=None, inbatch_loss=None, contrastive_weight=None,
                        pairwise_weight=None)
        return {"none": "loss mnrl learns from the table's (query, positive) rows alone"}


KINDS: dict[str, TrainingKind] = {"tas-b": TeacherDistillation(), "mnrl": LabelsOnly()}
"""The loss kinds by the name ``TrainingSettings.loss`` takes."""


def pair_batch_sampler(topics: dict[str, int] | None) -> Any:
    """The batch sampler (a class or partial, for the training arguments) of the mnrl loss's (anchor, positive) rows:
    topic-aware with each anchor's cluster (:func:`~st_tasb.training.dataset.build_pair_dataset`), else random
    batches with no text twice (sentence-transformers' ``NoDuplicatesBatchSampler``)."""
    from st_tasb.data.compat import NoDuplicatesBatchSampler
    from st_tasb.training.anchor_sampler import TopicAwareBatchSampler

    return partial(TopicAwareBatchSampler, clusters=topics) if topics else NoDuplicatesBatchSampler


@dataclass(frozen=True)
class Recipe:
    """A named way to train: the loss kind, its terms, the batches, and the teacher's scale it expects.

    Attributes:
        name: the name ``--recipe`` takes.
        description: one line for ``--help``, the README and the model card.
        loss: the loss kind (:data:`KINDS`).
        terms: the loss terms and the student's score.
        topic_aware: batches of one topic cluster (else random).
        balanced: pairs drawn evenly over each query's margin bins (else uniformly).
        teacher_scale: factor on a cosine bi-encoder teacher's scores that matches the student's scale (the demo's
            and the adapt pipeline's teacher).
    """

    name: str
    description: str
    loss: LossKind
    terms: LossTerms
    topic_aware: bool = True
    balanced: bool = True
    teacher_scale: float = 10.0

    @property
    def kind(self) -> TrainingKind:
        """What the recipe builds for a run."""
        return KINDS[self.loss]

    def settings(self) -> dict[str, Any]:
        """The :class:`~st_tasb.training.settings.TrainingSettings` fields the recipe sets (:data:`RECIPE_FIELDS`).

        Example:
            >>> RECIPES["mnrl"].settings()["topic_aware"], RECIPES["mnrl-topic"].settings()["similarity_scale"]
            (False, 20.0)
        """
        return {"loss": self.loss, "topic_aware": self.topic_aware, "balanced": self.balanced,
                **dataclasses.asdict(self.terms)}


RECIPE_FIELDS: tuple[str, ...] = ("loss", "topic_aware", "balanced", *LossTerms.fields())
"""The training settings a recipe sets; each can be given on its own to override the recipe's value."""

_MNRL_TERMS = LossTerms(similarity="cosine", similarity_scale=20.0)  # MNRL reads only the score and its scale
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "st-tasb",
            "topic-aware batches of margin-balanced (query, positive, negative) rows; in-batch KL distillation from the "
            "teacher's scores plus a contrastive term on the labels, no pairwise Margin-MSE; cosine x 20 student",
            "tas-b",
            LossTerms(pairwise_weight=0.0, alpha=1.0, inbatch_loss="kl", contrastive_weight=1.0, similarity="cosine",
                      similarity_scale=20.0),
            teacher_scale=20.0,
        ),
        Recipe(
            "paper",
            "TAS-Balanced as published: dot-product student, pairwise and in-batch Margin-MSE (alpha 0.75)",
            "tas-b",
            LossTerms(),
        ),
        Recipe(
            "mnrl",
            "baseline without a teacher: MultipleNegativesRankingLoss on (query, positive) rows, NoDuplicatesBatchSampler",
            "mnrl", _MNRL_TERMS, topic_aware=False,
        ),
        Recipe(
            "mnrl-topic",
            "baseline without a teacher: MultipleNegativesRankingLoss with topic-aware batches (TopicAwareBatchSampler)",
            "mnrl", _MNRL_TERMS,
        ),
    )
}
"""The recipes: st-tasb's best measured (the demo's default), the paper's (``st-tasb train``'s default), and the
baselines without a teacher."""

LOSS_RECIPES: dict[str, str] = {"tas-b": "paper", "mnrl": "mnrl-topic"}
"""The recipe a run takes when it names only its loss kind (``--loss mnrl``: MNRL with topic-aware batches)."""


def recipe_named(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve(recipe: str | None, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The recipe a run takes and the values of :data:`RECIPE_FIELDS`: those given (not ``None``), else the recipe's.

    Without a recipe, the loss kind given picks one (:data:`LOSS_RECIPES`; none: ``paper``).

    Raises:
        ValueError: for an unknown recipe or loss kind, or a loss kind that contradicts the recipe's.

    Example:
        >>> name, values = resolve(None, {"loss": "mnrl", "similarity_scale": None})
        >>> name, values["similarity"], values["topic_aware"]
        ('mnrl-topic', 'cosine', True)
        >>> resolve("paper", {"loss": "mnrl"})
        Traceback (most recent call last):
        ...
        ValueError: recipe 'paper' trains with loss tas-b, not mnrl: choose a recipe of loss mnrl (mnrl, mnrl-topic)
    """
    loss = values.get("loss")
    if loss is not None and loss not in KINDS:
        raise ValueError(f"loss must be one of {', '.join(KINDS)}, not {loss!r}")
    chosen = recipe_named(recipe if recipe is not None else LOSS_RECIPES[loss or "tas-b"])
    if loss is not None and loss != chosen.loss:
        matching = ", ".join(name for name, other in RECIPES.items() if other.loss == loss)
        raise ValueError(f"recipe {chosen.name!r} trains with loss {chosen.loss}, not {loss}: choose a recipe of loss "
                         f"{loss} ({matching})")
    defaults = chosen.settings()
    return chosen.name, {name: defaults[name] if values.get(name) is None else values[name] for name in RECIPE_FIELDS}


def describe_training(settings: Mapping[str, Any]) -> tuple[str, str]:
    """The model card's sentences on how a model was trained and how it scores, from the settings the card recorded:
    ``(method, scores)``. Settings without the loss kind (a card st-tasb did not fill) give general sentences.

    Example:
        >>> from st_tasb.training.settings import TrainingSettings
        >>> method, scores = describe_training(TrainingSettings(recipe="st-tasb").__dict__)
        >>> method.endswith("in-batch KL divergence x 1 + contrastive (labels) x 1"), scores.split(":")[0]
        (True, 'Scores are cosine similarities of the embeddings (x 20 in training, which ranks the same)')
    """
    kind = KINDS.get(settings.get("loss"))
    if kind is None:
        return "the settings below were recorded", "Score passages with `model.similarity(query_embeddings, passage_embeddings)`."
    if settings.get("similarity") == "cosine":
        scale = settings.get("similarity_scale") or 1
        scaled = f" (x {scale:g} in training, which ranks the same)" if scale != 1 else ""
        scores = (f"Scores are cosine similarities of the embeddings{scaled}: rank passages with "
                  "`model.similarity(query_embeddings, passage_embeddings)`, or an inner-product index of normalised "
                  "embeddings.")
    else:
        scores = ("Scores are dot products of the embeddings (no normalisation): rank passages with "
                  "`model.similarity(query_embeddings, passage_embeddings)` or an inner-product index.")
    return kind.describe(settings), scores


def _describe_table_teacher(table: TeacherScoreTable) -> str:
    """The pairwise teacher as the table records it (st-tasb score), with its scale."""
    name, scale = table.teacher.get("name"), table.teacher.get("scale", 1)
    if not name:
        return "precomputed teacher margins of the training table"
    return f"{name}" + (f", scores x {scale:g}" if scale != 1 else "")


def _describe_teacher(teacher: InBatchTeacher | None) -> str:
    if teacher is None:
        return "none (pairwise Margin-MSE only)"
    config = ", ".join(f"{key}={value}" for key, value in teacher.get_config_dict().items())
    return f"{type(teacher).__name__}({config})"
