"""The hyper-parameters of a TAS-Balanced run, kept apart from :mod:`st_tasb.training.trainer` so that reading them
(``st-tasb train --help``, config files) does not load torch.

A recipe (:mod:`st_tasb.training.recipes`) sets the loss kind, the loss terms and the batches; each of those settings
given on its own overrides the recipe's value.

Example:
    >>> TrainingSettings(batch_size=64, clusters_per_batch=2).sampler_kwargs()
    {'n_bins': 10, 'clusters_per_batch': 2, 'topic_aware': True, 'balanced': True, 'separate_positives': False}
    >>> settings = TrainingSettings(recipe="st-tasb", alpha=0.5)
    >>> settings.loss_terms().describe(), settings.student_similarity()
    ('in-batch KL divergence x 0.5 + contrastive (labels) x 1', ('cosine', 20.0))
    >>> TrainingSettings(batch_size=30, clusters_per_batch=4)
    Traceback (most recent call last):
    ...
    ValueError: batch_size (30) must be a multiple of clusters_per_batch (4)
    >>> TrainingSettings.of(TrainingSettings(alpha=0.5)).alpha
    0.5
    >>> TrainingSettings(batch_size="32")
    Traceback (most recent call last):
    ...
    ValueError: batch_size='32' must be int, not str
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from st_tasb.training.recipes import KINDS, RECIPE_FIELDS, RECIPES, resolve
from st_tasb.training.terms import LossTerms

RUN_ONLY_SETTINGS = ("cpu", "dataloader_workers", "logging_steps", "save_steps", "eval_steps", "early_stopping_patience",
                     "keep_best_model")
"""Settings of how a run executes, not of what it learns: the model card does not record them, and a resumed run may
change them."""
RESUMABLE_CHANGES = (*RUN_ONLY_SETTINGS, "max_steps", "epochs")
"""Settings a run may change when it resumes from its checkpoints (a longer or shorter budget included)."""

_RECIPE_HELP = "; ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items())


@dataclass
class RecipeOptions:
    """The settings a recipe sets (:data:`~st_tasb.training.recipes.RECIPE_FIELDS`): ``None`` is the recipe's value.

    The options of ``st-tasb train`` and ``st-tasb demo`` both; :class:`TrainingSettings` resolves them.
    """

    recipe: str | None = field(
        default=None,
        metadata={"help": "the recipe: sets --loss, the loss terms, --similarity and the batches, which flags override "
                          f"one by one (default: paper; with --loss mnrl: mnrl-topic). {_RECIPE_HELP}"},
    )
    loss: str | None = field(
        default=None,
        metadata={"help": "tas-b: the teachers' (query, positive, negative) margins and in-batch scores; mnrl: the "
                          "baseline without a teacher, sentence-transformers' MultipleNegativesRankingLoss on the "
                          "table's distinct (query, positive) rows, with topic-aware batches (TopicAwareBatchSampler) "
                          "or random ones (--random-batches: NoDuplicatesBatchSampler) (default: the recipe's)"},
    )
    similarity: str | None = field(
        default=None,
        metadata={"help": "the student's score: dot or cosine; recorded in the saved model (default: the recipe's; "
                          "paper: dot, mnrl: cosine)"},
    )
    similarity_scale: float | None = field(
        default=None,
        metadata={"help": "factor on the student's scores, the inverse temperature of the kl and contrastive terms; "
                          "match the teacher's scale (default: the recipe's; paper: 1, mnrl: 20 as sentence-transformers)"},
    )
    alpha: float | None = field(
        default=None,
        metadata={"help": "weight of the in-batch term (default: the recipe's; paper: 0.75); unused without an in-batch "
                          "teacher"},
    )
    inbatch_loss: str | None = field(
        default=None,
        metadata={"help": "the in-batch term: margin-mse (the paper) or kl (listwise: KL divergence from the in-batch "
                          "teacher's softmax over the batch's passages to the student's) (default: the recipe's)"},
    )
    pairwise_weight: float | None = field(
        default=None,
        metadata={"help": "tas-b: weight of the pairwise Margin-MSE term against the table's margins (default: the "
                          "recipe's; paper: 1)"},
    )
    contrastive_weight: float | None = field(
        default=None,
        metadata={"help": "tas-b: weight of a contrastive term on the labels beside the teachers' terms (each query's "
                          "positive against every passage of the batch, as MNRL) (default: the recipe's; paper: 0)"},
    )
    topic_aware: bool | None = field(
        default=None,
        metadata={"help": "batches of one topic cluster; off (--random-batches, the ablation): random queries, no "
                          "clusters needed (default: the recipe's; on but for mnrl)"},
    )
    balanced: bool | None = field(
        default=None,
        metadata={"help": "each query's pair drawn evenly over its margin bins; off (--uniform-pairs, the ablation): "
                          "uniformly (default: the recipe's; on)"},
    )


@dataclass
class TrainingSettings(RecipeOptions):
    """The hyper-parameters of a TAS-Balanced run; defaults are the paper's (Hofstätter et al., 2021).

    Raises:
        ValueError: for values out of range, naming the setting.
    """

    batch_size: int = field(
        default=32,
        metadata={"help": "queries per batch, b; every batch has exactly this many (the paper: 32)"},
    )
    learning_rate: float = field(default=7e-6, metadata={"help": "peak learning rate of Adam(W) (the paper: 7e-6)"})
    epochs: float = field(
        default=1.0,
        metadata={"help": "passes over the training queries (each query once per epoch)"},
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "stop after this many optimizer steps; overrides --epochs"},
    )
    warmup: float = field(
        default=0.0,
        metadata={"help": "learning-rate warmup: a number of steps (>= 1) or a fraction of training (< 1)"},
    )
    lr_scheduler: str = field(
        default="cosine",
        metadata={"help": "transformers learning-rate schedule: cosine, linear, constant, ..."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (the paper: none)"})
    n_bins: int = field(
        default=10,
        metadata={"help": "margin bins per query for balanced pair sampling, h (the paper: 10)"},
    )
    clusters_per_batch: int = field(
        default=1,
        metadata={"help": "topic clusters per batch, n; batch_size must be a multiple (the paper: 1)"},
    )
    separate_positives: bool = field(
        default=False,
        metadata={"help": "topic-aware batches of the teacher recipes: spread the queries that share a positive over "
                          "their cluster's batches, so that a passage is seldom one row's positive and another's "
                          "in-batch negative (mnrl's batches hold no text twice anyway)"},
    )
    min_margin: float | None = field(
        default=None,
        metadata={"help": "hard margin: leave out pairs whose teacher margin is below this before binning (likely false "
                          "negatives; Wang et al. 2023); the removed pairs and queries are logged and put in the card"},
    )
    seed: int = field(
        default=42,
        metadata={"help": "random seed of the model initialisation and of the batch sampler"},
    )
    fp16: bool = field(default=False, metadata={"help": "fp16 mixed precision (CUDA only)"})
    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 mixed precision (CUDA with bf16 support, or recent CPUs)"},
    )
    gather_across_devices: bool = field(
        default=False,
        metadata={"help": "with several processes (DDP): every query's in-batch negatives are the passages of all "
                          "processes' batches (one global batch), the in-batch teacher scores them all, and the gradient "
                          "is that of one process on the global batch; off: each process's own batch"},
    )
    gradcache_mini_batch_size: int | None = field(
        default=None,
        metadata={"help": "embed each batch in mini-batches of this size with gradient caching (large batches, little memory)"},
    )
    logging_steps: float = field(
        default=0.05,
        metadata={"help": "log the loss every N steps, or every such fraction of the run when below 1 (default 0.05: 20 "
                          "times a run); each logged component (pairwise, in_batch, contrastive) is already weighted: "
                          "the loss is their sum"},
    )
    save_steps: int | None = field(
        default=None,
        metadata={"help": "write a resumable checkpoint every N steps into OUTPUT/checkpoints"},
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate with the evaluator (st-tasb train: --eval-data) every N steps; none: only at the end"},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "stop when the evaluator's nDCG@10 has not improved for N evaluations (needs --eval-steps)"},
    )
    keep_best_model: bool = field(
        default=True,
        metadata={"help": "with --eval-steps: end with the checkpoint of the best nDCG@10 (the paper early-stopped on it)"},
    )
    dataloader_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even when CUDA is available"})

    def __post_init__(self) -> None:
        self._check_types()
        self.recipe, values = resolve(self.recipe, {name: getattr(self, name) for name in RECIPE_FIELDS})
        for name, value in values.items():
            setattr(self, name, value)
        self.loss_terms()  # the terms check their own values
        checks = {
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "warmup": self.warmup >= 0,
            "weight_decay": self.weight_decay >= 0,
            "min_margin": self.min_margin is None or math.isfinite(self.min_margin),
            "n_bins": self.n_bins >= 1,
            "clusters_per_batch": self.clusters_per_batch >= 1,
            "gradcache_mini_batch_size": self.gradcache_mini_batch_size is None or self.gradcache_mini_batch_size >= 1,
            "logging_steps": self.logging_steps > 0 and (self.logging_steps < 1 or float(self.logging_steps).is_integer()),
            "save_steps": self.save_steps is None or self.save_steps >= 1,
            "eval_steps": self.eval_steps is None or self.eval_steps >= 1,
            "early_stopping_patience": self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            "dataloader_workers": self.dataloader_workers >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(", ".join(f"{name}={getattr(self, name)!r} is out of range" for name in bad))
        if self.batch_size % self.clusters_per_batch:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of clusters_per_batch ({self.clusters_per_batch})"
            )
        if self.separate_positives and not KINDS[self.loss].uses_teacher:
            raise ValueError("separate_positives is for the teacher recipes' pair sampler: mnrl's batches already hold "
                             "no text twice")
        if self.fp16 and self.bf16:
            raise ValueError("choose one of fp16 and bf16")
        if self.early_stopping_patience is not None and not (self.eval_steps and self.keep_best_model):
            raise ValueError("early_stopping_patience needs eval_steps and keep_best_model")
        if self.eval_steps and self.keep_best_model and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) to keep the best model"
            )

    def _check_types(self) -> None:
        """Every setting has its declared type (an int is a float too; a bool is neither); names the first that has not."""
        hints = typing.get_type_hints(TrainingSettings)
        for field_ in dataclasses.fields(TrainingSettings):
            value, allowed = getattr(self, field_.name), typing.get_args(hints[field_.name]) or (hints[field_.name],)
            if value is None and type(None) in allowed:
                continue
            if any(_is_instance(value, kind) for kind in allowed if kind is not type(None)):
                continue
            names = " or ".join(kind.__name__ for kind in allowed if kind is not type(None))
            raise ValueError(f"{field_.name}={value!r} must be {names}, not {type(value).__name__}")

    @classmethod
    def of(cls, options: object) -> TrainingSettings:
        """The settings carried by ``options``, any object with these fields (e.g. parsed options of a
        command whose arguments extend this class)."""
        return cls(**{field.name: getattr(options, field.name) for field in dataclasses.fields(cls)})

    def with_recipe(self, name: str) -> TrainingSettings:
        """These settings trained by another recipe: every field of :data:`~st_tasb.training.recipes.RECIPE_FIELDS`
        is the new recipe's (nothing of the last one stays); the budget and the rest stay.

        Example:
            >>> TrainingSettings(recipe="st-tasb", max_steps=10).with_recipe("paper").loss_terms() == LossTerms()
            True
        """
        return dataclasses.replace(self, recipe=name, **dict.fromkeys(RECIPE_FIELDS))

    def loss_terms(self) -> LossTerms:
        """The loss terms of these settings (validated by :class:`~st_tasb.training.terms.LossTerms`)."""
        return LossTerms.of(self)

    def student_similarity(self) -> tuple[str, float]:
        """The student's score function and its scale (the recipe's unless set).

        Example:
            >>> TrainingSettings(loss="mnrl").student_similarity(), TrainingSettings(similarity="cosine").student_similarity()
            (('cosine', 20.0), ('cosine', 1.0))
        """
        return self.similarity, self.similarity_scale

    def sampler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler` these settings imply."""
        return {name: getattr(self, name) for name in ("n_bins", "clusters_per_batch", "topic_aware", "balanced",
                                                  "separate_positives")}


def _is_instance(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
