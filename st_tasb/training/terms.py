"""The terms of the teacher-distillation loss and their weights: one validated object, :class:`LossTerms`.

The loss (:class:`~st_tasb.training.losses.TeacherDistillationLoss`), its GradCache wrapper, the training settings,
the recipes, the model card and the resume check all take this object, so each term's name, allowed values and
checks are written here once. It does not load torch (``st-tasb train --help`` reads it).

Example:
    >>> LossTerms().describe()
    'pairwise Margin-MSE x 1 + in-batch Margin-MSE x 0.75'
    >>> LossTerms(pairwise_weight=0, alpha=1, inbatch_loss="kl", contrastive_weight=1).describe()
    'in-batch KL divergence x 1 + contrastive (labels) x 1'
    >>> LossTerms(inbatch_loss="listnet")
    Traceback (most recent call last):
    ...
    ValueError: inbatch_loss must be one of margin-mse, kl, not 'listnet'
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from st_tasb.data.checks import check_number

InBatchLoss = Literal["margin-mse", "kl"]
INBATCH_LOSSES: tuple[str, ...] = typing.get_args(InBatchLoss)
"""The forms of the in-batch term: the paper's Margin-MSE, or listwise KL divergence."""
Similarity = Literal["dot", "cosine"]
SIMILARITY_NAMES: tuple[str, ...] = typing.get_args(Similarity)
"""The student's score functions by name (the name is recorded in the saved model)."""

_NO_TERM = ("the loss has no term left: give pairwise_weight or contrastive_weight a value above 0, or alpha with an "
            "in-batch teacher")
_TERM_NAMES = {"pairwise": "pairwise Margin-MSE", "margin-mse": "in-batch Margin-MSE", "kl": "in-batch KL divergence",
               "contrastive": "contrastive (labels)"}


@dataclass(frozen=True)
class LossTerms:
    """The loss terms a student learns from, their weights, and the student's score; defaults are the paper's.

    ``loss = pairwise_weight * L_pair + alpha * L_inb + contrastive_weight * L_con``, the student scoring each
    (query, passage) by ``similarity`` times ``similarity_scale`` (the formulas: :mod:`st_tasb.training.losses`).

    Attributes:
        pairwise_weight: weight of the pairwise Margin-MSE term on the table's teacher margins (the paper: 1).
        alpha: weight of the in-batch term against the in-batch teacher (the paper: 0.75); unused without one.
        inbatch_loss: the in-batch term's form, ``"margin-mse"`` (the paper) or ``"kl"`` (listwise over the batch).
        contrastive_weight: weight of the contrastive term on the labels (each query's positive against every
            passage of the batch, as MNRL); 0, the paper: none.
        similarity: the student's score, ``"dot"`` (the paper) or ``"cosine"``.
        similarity_scale: factor on the student's scores, the inverse temperature of the KL and contrastive terms.

    Raises:
        ValueError: for a weight that is not a finite number >= 0, a scale that is not > 0, or an unknown form or
            similarity, naming the field.
    """

    pairwise_weight: float = 1.0
    alpha: float = 0.75
    inbatch_loss: InBatchLoss = "margin-mse"
    contrastive_weight: float = 0.0
    similarity: Similarity = "dot"
    similarity_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pairwise_weight", "alpha", "contrastive_weight"):
            check_number(name, getattr(self, name), integer=False, minimum=0)
        check_number("similarity_scale", self.similarity_scale, integer=False, minimum=0, inclusive=False)
        for name, choices in (("inbatch_loss", INBATCH_LOSSES), ("similarity", SIMILARITY_NAMES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        for name in ("pairwise_weight", "alpha", "contrastive_weight", "similarity_scale"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of the terms' settings (also fields of :class:`~st_tasb.training.settings.TrainingSettings`)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, values: Any) -> LossTerms:
        """The terms carried by ``values``: any object with these attributes (e.g. the training settings).

        Example:
            >>> from types import SimpleNamespace
            >>> LossTerms.of(SimpleNamespace(**{**dataclasses.asdict(LossTerms()), "alpha": 0.5})).alpha
            0.5
        """
        return cls(**{name: getattr(values, name) for name in cls.fields()})

    def check_teacher(self, has_inbatch_teacher: bool) -> None:
        """Raise ``ValueError`` unless the terms leave something to learn with or without an in-batch teacher.

        Example:
            >>> LossTerms().check_teacher(False)
            Traceback (most recent call last):
            ...
            ValueError: alpha=0.75 weighs an in-batch term, but no inbatch_teacher was given
        """
        if not self.used(has_inbatch_teacher):
            raise ValueError(_NO_TERM)
        if not has_inbatch_teacher and self.alpha > 0:
            raise ValueError(f"alpha={self.alpha:g} weighs an in-batch term, but no inbatch_teacher was given")

    def used(self, has_inbatch_teacher: bool = True) -> dict[str, float]:
        """The terms the loss computes, each with its weight: ``pairwise``, ``in_batch`` and ``contrastive``.

        Example:
            >>> LossTerms(contrastive_weight=0.5).used(has_inbatch_teacher=False)
            {'pairwise': 1.0, 'contrastive': 0.5}
        """
        weights = {"pairwise": self.pairwise_weight, "in_batch": self.alpha if has_inbatch_teacher else 0.0,
                   "contrastive": self.contrastive_weight}
        return {name: weight for name, weight in weights.items() if weight != 0}

    def is_margin_mse(self) -> bool:
        """Whether the terms are the paper's form, dual-teacher Margin-MSE: a pairwise term, the in-batch term (if any)
        as Margin-MSE, and no contrastive term (whatever the weights and the score).

        Example:
            >>> LossTerms(alpha=0.5).is_margin_mse(), LossTerms(inbatch_loss="kl").is_margin_mse()
            (True, False)
        """
        return self.pairwise_weight > 0 and self.inbatch_loss == "margin-mse" and self.contrastive_weight == 0

    def describe(self, has_inbatch_teacher: bool = True) -> str:
        """The terms in use as one line, e.g. ``"in-batch KL divergence x 1 + contrastive (labels) x 1"``."""
        names = {**_TERM_NAMES, "in_batch": _TERM_NAMES[self.inbatch_loss]}
        return " + ".join(f"{names[name]} x {weight:g}" for name, weight in self.used(has_inbatch_teacher).items())

    def describe_similarity(self) -> str:
        """The student's score in words, e.g. ``"cosine x 20"`` or ``"dot"``.

        Example:
            >>> LossTerms(similarity="cosine", similarity_scale=20).describe_similarity()
            'cosine x 20'
        """
        return self.similarity if self.similarity_scale == 1 else f"{self.similarity} x {self.similarity_scale:g}"
