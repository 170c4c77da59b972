"""GradCache variant of the dual-teacher loss, for batches (256 and more) whose activations do not fit.

Built on sentence-transformers' cached-loss machinery (``CachedLossMixin``, GradCache,
https://arxiv.org/abs/2101.06983): the student embeds the batch in mini-batches without gradients,
the loss is computed and back-propagated to the embeddings, and each mini-batch is embedded again
with gradients, fed the cached embedding gradients. The loss and the gradients equal those of the wrapped
:class:`~st_tasb.training.losses.TeacherDistillationLoss` on the same batch (up to dropout draws, which are
replayed); only one mini-batch of activations is alive at a time. Needs sentence-transformers >= 6.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from st_tasb.data.checks import check_number
from st_tasb.data.compat import (
    HAS_SENTENCE_TRANSFORMERS_6,
    CachedLossMixin,
    has_static_embedding_input,
)
from st_tasb.training.losses import TeacherDistillationLoss, dual_teacher_margin_mse


@dataclass
class _Targets:
    """What the loss stage needs besides the embeddings; the loss stage records its components here."""

    margin: Tensor
    inbatch_scores: Tensor | None
    copies: Tensor | None = None
    components: dict[str, Tensor] = field(default_factory=dict)


class CachedTeacherDistillationLoss(CachedLossMixin, nn.Module):
    """A :class:`~st_tasb.training.losses.TeacherDistillationLoss` (or :class:`DualTeacherMarginMSELoss`) computed with
    gradient caching (GradCache): it wraps the plain loss, which owns its terms, teacher and checks, as
    sentence-transformers 6's cached losses wrap theirs.

    Args:
        loss: the plain loss to compute (its model is embedded in mini-batches).
        mini_batch_size: rows embedded per forward pass; bounds the activation memory.
        mini_batch_num_tokens: if set, mini-batches are packed by token count instead (see
            sentence-transformers' cached losses).
        show_progress_bar: show a bar over the mini-batches.

    Raises:
        ImportError: on sentence-transformers < 6.
        ValueError: for a loss without a model, a StaticEmbedding student (it cannot be mini-batched), or sizes
            below 1.

    Example:
        ::

            loss = CachedTeacherDistillationLoss(DualTeacherMarginMSELoss(student, teacher, alpha=0.75), mini_batch_size=32)
            args = SentenceTransformerTrainingArguments(output_dir, per_device_train_batch_size=256, ...)
    """

    def __init__(
        self,
        loss: TeacherDistillationLoss,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        if not HAS_SENTENCE_TRANSFORMERS_6:
            raise ImportError(
                "CachedTeacherDistillationLoss needs the GradCache machinery of sentence-transformers >= 6; "
                "upgrade it, or use the plain loss"
            )
        if loss.model is None:
            raise ValueError("CachedTeacherDistillationLoss needs a loss with a model to embed in mini-batches")
        if has_static_embedding_input(loss.model):
            raise ValueError("CachedTeacherDistillationLoss cannot mini-batch a StaticEmbedding student; use the plain loss")
        check_number("mini_batch_size", mini_batch_size, minimum=1)
        check_number("mini_batch_num_tokens", mini_batch_num_tokens, minimum=1, optional=True)
        super().__init__()
        self.loss = loss
        self.model = loss.model
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Any) -> dict[str, Tensor]:
        """The loss components, as the plain loss's ``forward``, computed with gradient caching."""
        features = self.loss.check_features(sentence_features)
        # the teacher runs once per batch, outside the two embedding passes
        columns = self.loss.column_labels(labels)  # gathered once for the teacher and the copies
        targets = _Targets(*self.loss.teacher_targets(labels, columns=columns),
                           copies=self.loss.positive_copies(labels, columns))
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
                                             terms=self.loss.terms, similarity_fct=self.loss.similarity_fct,
                                             passages=self.loss.in_batch_passages(positive, negative),
                                             copies=labels.copies)
        total = torch.stack(list(components.values())).sum()
        if with_backward:
            total.backward()
            total = total.detach()
        labels.components = {name: value.detach() for name, value in components.items()}
        return total

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the model card: the plain loss's, and the mini-batch size."""
        return {**self.loss.get_config_dict(), "mini_batch_size": self.mini_batch_size}

    @property
    def citation(self) -> str:
        """The plain loss's citation, for the model card."""
        return self.loss.citation


class CachedDualTeacherMarginMSELoss(CachedTeacherDistillationLoss):
    """The GradCache wrapper of the paper's :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss`, under the name
    the model card shows for it (any teacher distillation loss can be wrapped; the behaviour is the same)."""
