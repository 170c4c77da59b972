"""Precomputed in-batch teacher: scores looked up in a table of (query, passage, score).

For in-batch teacher scores computed offline (any scorer, any framework). The table must hold every
(query, passage) pair that can meet in a batch: each query of a batch against every positive and
negative of the batch. A missing pair is an error, never a silent zero.

Lookups are vectorised: (query row, passage row) pairs are packed into one sorted int64 key array and
found with a binary search, so a table of tens of millions of pairs costs two arrays, not a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from st_tasb.data.texts import TextStore
from st_tasb.teachers.base import InBatchTeacher, batch_indices


class MissingScoreError(KeyError):
    """A (query, passage) pair of a batch has no score in the table; names up to five such pairs."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class PrecomputedTeacher(InBatchTeacher):
    """In-batch teacher scores from a table keyed by (query row, passage row).

    Args:
        query_index: row positions into the queries store (the training dataset's ``query_index``).
        passage_index: row positions into the corpus store (its ``positive_index`` / ``negative_index``).
        scores: the teacher score of each pair.
        queries: the queries store, used only to name ids in error messages.
        corpus: the corpus store, used only to name ids in error messages.

    Raises:
        ValueError: if the table is empty, the arrays differ in length, a position is negative, or a pair
            repeats.

    Example:
        >>> teacher = PrecomputedTeacher([0, 0, 1, 1], [0, 1, 0, 1], [5.0, 1.0, 2.0, 7.0])
        >>> teacher.score_indices(torch.tensor([1, 0]), torch.tensor([1, 0]))
        tensor([[7., 2.],
                [1., 5.]])
    """

    def __init__(
        self,
        query_index: Sequence[int] | np.ndarray,
        passage_index: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        *,
        queries: TextStore | None = None,
        corpus: TextStore | None = None,
    ) -> None:
        super().__init__()
        query_index = np.asarray(query_index, dtype=np.int64).ravel()
        passage_index = np.asarray(passage_index, dtype=np.int64).ravel()
        scores = np.asarray(scores, dtype=np.float32).ravel()
        if not len(query_index) == len(passage_index) == len(scores):
            raise ValueError(
                f"PrecomputedTeacher: query_index, passage_index and scores differ in length "
                f"({len(query_index)}, {len(passage_index)}, {len(scores)})"
            )
        if not len(scores):
            raise ValueError("PrecomputedTeacher: the table is empty")
        if (query_index < 0).any() or (passage_index < 0).any():
            raise ValueError("PrecomputedTeacher: row positions must be non-negative (unknown ids resolved to -1?)")
        self._queries, self._corpus = queries, corpus
        self._width = int(passage_index.max()) + 1
        keys = query_index * self._width + passage_index
        order = np.argsort(keys, kind="stable")
        self._keys, self._scores = keys[order], scores[order]
        repeated = np.flatnonzero(self._keys[1:] == self._keys[:-1])
        if len(repeated):
            first = order[repeated[0]]
            raise ValueError(
                f"PrecomputedTeacher: the pair {self._name(query_index[first], passage_index[first])} has "
                f"{np.count_nonzero(keys == keys[first])} scores; keep one score per pair"
            )

    @classmethod
    def from_ids(
        cls,
        query_ids: Any,
        passage_ids: Any,
        scores: Sequence[float] | np.ndarray,
        *,
        queries: TextStore,
        corpus: TextStore,
    ) -> PrecomputedTeacher:
        """A teacher from a table keyed by ids, resolved to row positions of the training stores.

        Raises:
            UnknownIdError: for ids absent from the stores.

        Example:
            >>> queries = TextStore.from_records([("q1", "a?"), ("q2", "b?")], name="queries")
            >>> corpus = TextStore.from_records([("d1", "a."), ("d2", "b.")], name="corpus")
            >>> teacher = PrecomputedTeacher.from_ids(["q2", "q1"], ["d1", "d1"], [3.0, 4.0], queries=queries, corpus=corpus)
            >>> teacher.score_indices(torch.tensor([0, 1]), torch.tensor([0])).flatten().tolist()
            [4.0, 3.0]
        """
        return cls(queries.positions(query_ids), corpus.positions(passage_ids), scores, queries=queries, corpus=corpus)

    def __len__(self) -> int:
        return len(self._keys)

    def _name(self, query_row: int, passage_row: int) -> str:
        query = f"query {self._queries.ids[int(query_row)]}" if self._queries else f"query row {query_row}"
        passage = f"passage {self._corpus.ids[int(passage_row)]}" if self._corpus else f"passage row {passage_row}"
        return f"({query}, {passage})"

    def score_indices(self, query_index: Tensor, passage_index: Tensor) -> Tensor:
        """The ``[Bq, P]`` table scores of every query row against every passage row.

        Raises:
            MissingScoreError: naming up to five pairs absent from the table.
        """
        query_rows = np.asarray(query_index, dtype=np.int64).reshape(-1, 1)
        passage_rows = np.asarray(passage_index, dtype=np.int64).reshape(1, -1)
        keys = query_rows * self._width + passage_rows
        found = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        # a passage row outside [0, width) would alias another query's key
        known = (passage_rows >= 0) & (passage_rows < self._width) & (self._keys[found] == keys)
        if not known.all():
            rows, columns = np.nonzero(~known)
            pairs = [self._name(query_rows[r, 0], passage_rows[0, c]) for r, c in zip(rows[:5], columns[:5])]
            raise MissingScoreError(
                f"PrecomputedTeacher: {len(rows)} (query, passage) pair(s) of the batch have no score, e.g. "
                f"{', '.join(pairs)}; the table must score each query against every passage of its batch"
            )
        return torch.from_numpy(self._scores[found])

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """Table scores of a batch (needs the index labels of the training dataset)."""
        return self.score_indices(*batch_indices(labels, "PrecomputedTeacher"))

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        return {"pairs": len(self)}
