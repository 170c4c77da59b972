"""GradCache variant of the dual-teacher loss, for batches (256 and more) whose activations do not fit.

Built on sentence-transformers' cached-loss machinery (``CachedLossMixin``, GradCache,
https://arxiv.org/abs/2101.06983): the student embeds the batch in mini-batches without gradients,
the loss is computed and back-propagated to the embeddings, and each mini-batch is embedded again
with gradients, fed the cached embedding gradients. The loss and the gradients equal those of
:class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` on the same batch (up to dropout draws, which are
replayed); only one mini-batch of activations is alive at a time. Needs sentence-transformers >= 6.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import dot_score
from torch import Tensor

from st_tasb.data.compat import (
    HAS_SENTENCE_TRANSFORMERS_6,
    CachedLossMixin,
    has_static_embedding_input,
)
from st_tasb.teachers.base import InBatchTeacher
from st_tasb.training.losses import DualTeacherMarginMSELoss, dual_teacher_margin_mse


@dataclass
class _Targets:
    """What the loss stage needs besides the embeddings; the loss stage records its components here."""

    margin: Tensor
    inbatch_scores: Tensor | None
    components: dict[str, Tensor] = field(default_factory=dict)


class CachedDualTeacherMarginMSELoss(CachedLossMixin, DualTeacherMarginMSELoss):
    """:class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` with gradient caching (GradCache).

    Args:
        model: the student SentenceTransformer.
        inbatch_teacher: the in-batch teacher (see :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss`).
        alpha: weight of the in-batch term.
        similarity_fct: student score matrix of two embedding batches (default: dot product).
        inbatch_loss, contrastive_weight, pairwise_weight: the terms in use (see the plain loss).
        gather_across_devices: in-batch terms over every process's passages (see the plain loss).
        mini_batch_size: rows embedded per forward pass; bounds the activation memory.
        mini_batch_num_tokens: if set, mini-batches are packed by token count instead (see
            sentence-transformers' cached losses).
        show_progress_bar: show a bar over the mini-batches.

    Raises:
        ImportError: on sentence-transformers < 6.
        ValueError: as the plain loss, or for a StaticEmbedding student (it cannot be mini-batched).

    Example:
        ::

            loss = CachedDualTeacherMarginMSELoss(student, inbatch_teacher=teacher, alpha=0.75, mini_batch_size=32)
            args = SentenceTransformerTrainingArguments(output_dir, per_device_train_batch_size=256, ...)
    """

    def __init__(
        self,
        model: SentenceTransformer,
        inbatch_teacher: InBatchTeacher | None = None,
        alpha: float = 0.75,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = dot_score,
        inbatch_loss: str = "margin-mse",
        contrastive_weight: float = 0.0,
        pairwise_weight: float = 1.0,
        gather_across_devices: bool = False,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        if not HAS_SENTENCE_TRANSFORMERS_6:
            raise ImportError(
                "CachedDualTeacherMarginMSELoss needs the GradCache machinery of sentence-transformers >= 6; "
                "upgrade it, or use DualTeacherMarginMSELoss"
            )
        if has_static_embedding_input(model):
            raise ValueError(
                "CachedDualTeacherMarginMSELoss cannot mini-batch a StaticEmbedding student; use "
                "DualTeacherMarginMSELoss"
            )
        if mini_batch_size < 1 or (mini_batch_num_tokens is not None and mini_batch_num_tokens < 1):
            raise ValueError("mini_batch_size and mini_batch_num_tokens must be positive")
        super().__init__(model, inbatch_teacher, alpha=alpha, similarity_fct=similarity_fct, inbatch_loss=inbatch_loss,
                         contrastive_weight=contrastive_weight, pairwise_weight=pairwise_weight,
                         gather_across_devices=gather_across_devices)
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Any) -> dict[str, Tensor]:
        """The loss components, as :meth:`DualTeacherMarginMSELoss.forward`, computed with gradient caching."""
        features = self.check_features(sentence_features)
        # the teacher runs once per batch, outside the two embedding passes
        targets = _Targets(*self.teacher_targets(labels))
        total = self.forward_cached(features, targets)
        # `total` carries the GradCache backward hook: keep it in the sum the trainer back-propagates, as the
        # last component, and log the others as they were computed
        *first, last = targets.components
        return {**{name: targets.components[name] for name in first}, last: total - sum(targets.components[n] for n in first)}

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: _Targets | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The loss over the whole batch from the per-mini-batch embeddings (the GradCache loss stage)."""
        query, positive, negative = (torch.cat(column) for column in reps)
        components = dual_teacher_margin_mse(query, positive, negative, labels.margin, labels.inbatch_scores,
                                             **self.term_settings(), passages=self.in_batch_passages(positive, negative))
        total = torch.stack(list(components.values())).sum()
        if with_backward:
            total.backward()
            total = total.detach()
        labels.components = {name: value.detach() for name, value in components.items()}
        return total

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the model card."""
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}
