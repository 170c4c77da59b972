"""The mean of several teachers, in both roles: the paper's T2 (three cross-encoders averaged) or any mix.

As pairwise teacher it averages each (query, passage) pair's scores (``score_pairs``); as in-batch teacher it
averages the ``[B, 2B]`` matrices of its members, each computed as the member computes it alone (row positions,
texts or cached embeddings). The members' scores are averaged as they are: members meant to be averaged should
score on one scale (for example two bi-encoders' cosine scores with the same factor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from st_tasb.data.texts import TextStore
from st_tasb.teachers.base import InBatchTeacher, PairScorer


class EnsembleTeacher(InBatchTeacher):
    """The mean of several teachers' scores.

    Args:
        teachers: the members. Any :class:`~st_tasb.teachers.base.PairScorer` can score pairs; the in-batch role
            needs every member to be an :class:`~st_tasb.teachers.base.InBatchTeacher`.
        name: how a scoring job's manifest names the ensemble (default: ``mean(`` the members' names ``)``).

    Raises:
        ValueError: if ``teachers`` is empty.

    Example:
        >>> class Constant(InBatchTeacher):
        ...     def __init__(self, value):
        ...         super().__init__()
        ...         self.value, self.name = value, f"constant {value}"
        ...     def score(self, queries, passages):
        ...         return torch.full((len(queries), len(passages)), self.value)
        >>> ensemble = EnsembleTeacher([Constant(1.0), Constant(4.0)])
        >>> ensemble.name
        'mean(constant 1.0, constant 4.0)'
        >>> texts = {"query": ["q"], "positive": ["p"], "negative": ["n"]}
        >>> ensemble({"margin": torch.zeros(1), "texts": texts})
        tensor([[2.5000, 2.5000]])
        >>> queries, corpus = TextStore.from_records([("q1", "q")]), TextStore.from_records([("d1", "p")])
        >>> ensemble.score_pairs(queries, corpus, np.array([0]), np.array([0]))
        array([2.5], dtype=float32)
    """

    def __init__(self, teachers: Sequence[PairScorer], name: str | None = None) -> None:
        super().__init__()
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = tuple(teachers)  # each member manages its own device and frozen weights
        self.name = name or "mean(" + ", ".join(t.name for t in self.members) + ")"

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """The mean of the members' scores of each pair (summed in float64)."""
        total = np.zeros(len(query_positions), dtype=np.float64)
        for teacher in self.members:
            total += teacher.score_pairs(queries, corpus, query_positions, doc_positions)
        return (total / len(self.members)).astype(np.float32)

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """The mean of the members' ``[B, 2B]`` scores of the batch.

        Raises:
            TypeError: if a member is not an in-batch teacher (it scores pairs only).
        """
        scores = []
        for teacher in self.members:
            if not isinstance(teacher, InBatchTeacher):
                raise TypeError(f"{teacher.name} scores pairs only: it cannot be a member of an in-batch ensemble")
            scores.append(teacher(labels))
        return torch.stack([s.to(scores[0].device) for s in scores]).mean(dim=0)

    def get_config_dict(self) -> dict[str, Any]:
        return {"teachers": [t.name for t in self.members]}
