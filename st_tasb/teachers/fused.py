"""A hybrid teacher: BM25 and a bi-encoder, each normalised per query, then combined with a weight on BM25.

``fused(q, d) = w * norm_q(bm25(q, d)) + (1 - w) * norm_q(dense(q, d))``, where for each teacher
``norm_q(s) = (s - low_q) / (high_q - low_q)`` with ``high_q`` the teacher's best score of query ``q`` over the
whole corpus and ``low_q`` its ``depth``-th best (a span of 0 counts as 1).

Why this normalisation:

* **Per query.** BM25 scores are not comparable across queries (a long query with rare words scores
  higher on every passage) while a bi-encoder's cosine is bounded; one fixed standardisation per teacher
  would let the BM25 side weigh more for some queries than for others. After ``norm_q`` each teacher
  gives 1 to its best passage of the corpus and 0 to its ``depth``-th, for every query.
* **Independent of what else is scored.** ``low_q`` and ``high_q`` come from retrieval over the whole
  corpus (BM25 with bm25s, the bi-encoder from its cached embeddings), computed once per query and
  cached (:meth:`FusedTeacher.ranges`). A pair therefore gets the same score alone, among its query's
  candidates (``score_pairs``) or in a training batch (``score_indices``); min-max over the pairs being
  scored would change a pair's score with its company.
* **Not clipped.** Passages below the ``depth``-th score get negative values, so each side keeps its
  raw margins between two passages (up to the per-query factor); clipping at 0 would tie all the
  negatives outside a teacher's top ``depth``.
* It is the fusion measured in issue 27 (min-max of each list, the top-100 lists of BM25 and the
  dense model); :meth:`FusedTeacher.search` is that retrieval, with every candidate of the union scored
  by both teachers.

The bi-encoder side needs cached embeddings (:class:`~st_tasb.teachers.bi_encoder.EmbeddingCache`) of the
whole corpus and of the queries store whose row positions are scored: the fused teacher reads row
positions (``score_pairs``, ``score_indices``) and has no text role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from st_tasb.data.checks import check_number
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.search import Hits
from st_tasb.teachers.base import InBatchTeacher, batch_indices
from st_tasb.teachers.bi_encoder import BiEncoderTeacher
from st_tasb.teachers.bm25 import BM25Teacher

_QUERY_CHUNK = 256  # queries retrieved at a time for their ranges
_CORPUS_CHUNK = 65_536  # passages scored at a time by the bi-encoder side


class FusedTeacher(InBatchTeacher):
    """``bm25_weight * norm(BM25) + (1 - bm25_weight) * norm(bi-encoder)``, normalised per query (module docstring).

    Args:
        bm25: the BM25 side; its corpus is the one scored. For ``score_indices`` (the in-batch role) build it
            with ``queries=`` the training queries store.
        dense: the bi-encoder side, with a cache whose corpus rows are the BM25 corpus's and whose query rows
            are the queries store's that positions are given into.
        bm25_weight: ``w``, the weight on BM25 (0: the bi-encoder alone, 1: BM25 alone); choose it on dev.
        depth: the rank whose score is each teacher's 0 for a query (its best passage is 1).
        scale: factor on every fused score (e.g. to bring them to the range of a student's dot products).
        name: how a scoring job's manifest names the teacher (default: the weight, the depth and both names).

    Raises:
        ValueError: if ``bm25_weight`` is outside [0, 1], ``depth < 1``, ``scale <= 0``, the bi-encoder has no cache, or the
            cache's rows do not match the BM25 corpus or queries.

    Example:
        >>> corpus = TextStore.from_records([("d1", "cats purr"), ("d2", "dogs bark at cats"), ("d3", "markets fell")])
        >>> queries = TextStore.from_records([("q1", "do cats purr"), ("q2", "why did markets fall")])
        >>> cache = (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.9, 0.1], [0.6, 0.4], [0.0, 1.0]]))
        >>> dense = BiEncoderTeacher(cache=cache, similarity_fn_name="dot", device="cpu")
        >>> teacher = FusedTeacher(BM25Teacher(corpus, queries=queries), dense, bm25_weight=0.5, depth=2)
        >>> teacher.score_pairs(queries, corpus, np.array([0, 0, 1]), np.array([0, 1, 2]))
        array([1., 0., 1.], dtype=float32)
        >>> teacher.score_indices(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
        tensor([[ 1.0000,  0.0000, -1.1836],
                [-0.2500,  0.0000,  1.0000]])
        >>> teacher.ranges(queries, np.array([0])).round(3)  # BM25 low and high, bi-encoder low and high
        array([[0.167, 0.62 , 0.6  , 0.9  ]])
        >>> teacher.search(queries).positions[:, :2]  # the union of both top-2 lists, by fused score
        array([[0, 1],
               [2, 1]])
    """

    def __init__(
        self,
        bm25: BM25Teacher,
        dense: BiEncoderTeacher,
        *,
        bm25_weight: float,
        depth: int = 100,
        scale: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        check_number("bm25_weight", bm25_weight, integer=False, minimum=0)
        if bm25_weight > 1:
            raise ValueError(f"bm25_weight must be in [0, 1] (the weight on BM25), not {bm25_weight!r}")
        check_number("depth", depth, minimum=1)
        check_number("scale", scale, integer=False, minimum=0, inclusive=False)
        if dense.cache is None:
            raise ValueError("FusedTeacher needs the bi-encoder's embeddings of the corpus: give the BiEncoderTeacher "
                             "a cache (cache= or build_cache)")
        if len(dense.cache.corpus) != len(bm25.corpus):
            raise ValueError(f"FusedTeacher: the bi-encoder's cache has {len(dense.cache.corpus)} passages, the BM25 "
                             f"corpus {len(bm25.corpus)}; build both on the same corpus")
        self.bm25, self.dense = bm25, dense
        if bm25.queries is not None:
            self._check_queries(bm25.queries)
        self.bm25_weight, self.depth = float(bm25_weight), min(int(depth), len(bm25.corpus))
        self.scale = float(scale)
        scaled = f" x {scale:g}" if scale != 1 else ""
        self.name = name or f"fused(bm25_weight={bm25_weight:g},depth={depth}):{bm25.name}+{dense.name}{scaled}"
        self._ranges = np.full((len(dense.cache.queries), 4), np.nan)  # filled per query as needed
        self.freeze()

    def _check_queries(self, queries: TextStore) -> None:
        cached = len(self.dense.cache.queries)
        if len(queries) != cached:
            raise ValueError(f"FusedTeacher: {queries.name} has {len(queries)} queries but the bi-encoder's cache "
                             f"{cached}: the cache's query rows must be this store's")

    def ranges(self, queries: TextStore, query_positions: np.ndarray) -> np.ndarray:
        """Each query's ``(bm25 low, bm25 high, dense low, dense high)``: the ``depth``-th and the best score of each
        teacher over the whole corpus, computed once per query and cached.

        Call it once on every position of a training queries store to retrieve ahead of training rather than
        batch by batch.

        Args:
            queries: the store the positions are into (the rows of the bi-encoder's cache).
            query_positions: row positions.

        Returns:
            A float64 array ``[len(query_positions), 4]``.
        """
        self._check_queries(queries)
        query_positions = np.asarray(query_positions, dtype=np.int64)
        missing = np.unique(query_positions[np.isnan(self._ranges[query_positions, 0])])
        for start in range(0, len(missing), _QUERY_CHUNK):
            self._retrieve(queries, missing[start : start + _QUERY_CHUNK])
        return self._ranges[query_positions]

    def _retrieve(self, queries: TextStore, positions: np.ndarray) -> tuple[Hits, np.ndarray]:
        """Both teachers' top ``depth`` over the corpus for the queries at ``positions``: the BM25 hits and the
        bi-encoder's hit positions; their ranges are cached on the way."""
        lexical = self.bm25.search(queries.texts(positions), top_k=self.depth)
        query_index = torch.from_numpy(positions)
        best_scores, best_rows = None, None
        for start in range(0, len(self.bm25.corpus), _CORPUS_CHUNK):
            rows = torch.arange(start, min(start + _CORPUS_CHUNK, len(self.bm25.corpus)))
            scores = self.dense.score_indices(query_index, rows).cpu()
            if best_scores is not None:
                scores, rows = torch.cat([best_scores, scores], dim=1), torch.cat([best_rows, rows.expand(len(positions), -1)], dim=1)
            else:
                rows = rows.expand(len(positions), -1)
            best_scores, at = scores.topk(min(self.depth, scores.shape[1]), dim=1)
            best_rows = rows.gather(1, at)
        dense = best_scores.double().numpy()
        self._ranges[positions] = np.stack(
            [lexical.scores[:, -1], lexical.scores[:, 0], dense[:, -1], dense[:, 0]], axis=1
        )
        return lexical, best_rows.numpy()

    def _fuse(self, bm25: np.ndarray, dense: np.ndarray, ranges: np.ndarray) -> np.ndarray:
        """The weighted sum of both sides' normalised scores, scaled; ``ranges`` broadcasts against the scores."""
        def normalised(scores: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
            span = high - low
            return (scores - low) / np.where(span > 0, span, 1.0)

        low_b, high_b, low_d, high_d = np.moveaxis(ranges, -1, 0)
        fused = self.bm25_weight * normalised(bm25, low_b, high_b) + (1 - self.bm25_weight) * normalised(
            dense, low_d, high_d
        )
        return (self.scale * fused).astype(np.float32)

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """One fused score per (query, passage) pair given by row positions.

        Raises:
            ValueError: if ``queries`` is not the bi-encoder cache's store or ``corpus`` not the BM25 corpus.
        """
        self._check_queries(queries)
        query_positions = np.asarray(query_positions, dtype=np.int64)
        bm25 = self.bm25.score_pairs(queries, corpus, query_positions, doc_positions).astype(np.float64)
        dense = self.dense.score_pairs(queries, corpus, query_positions, doc_positions).astype(np.float64)
        return self._fuse(bm25, dense, self.ranges(queries, query_positions))

    def score_indices(self, query_index: Tensor, passage_index: Tensor) -> Tensor:
        """Fused scores ``[Bq, P]`` of query rows of the BM25 side's ``queries`` against corpus rows.

        Raises:
            ValueError: if the BM25 side was built without ``queries``.
        """
        if self.bm25.queries is None:
            raise ValueError("FusedTeacher.score_indices reads query rows: build its BM25Teacher with queries=")
        bm25 = self.bm25.score_indices(query_index, passage_index).double().numpy()
        dense = self.dense.score_indices(query_index, passage_index).double().cpu().numpy()
        ranges = self.ranges(self.bm25.queries, np.asarray(query_index, dtype=np.int64))
        return torch.from_numpy(self._fuse(bm25, dense, ranges[:, None, :]))

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """The batch's scores by row positions (needs the index labels: ``build_training_dataset(..., with_indices=True)``)."""
        return self.score_indices(*batch_indices(labels, "FusedTeacher"))

    def search(self, queries: TextStore) -> Hits:
        """Fusion retrieval: the union of each query's BM25 and bi-encoder top ``depth``, ranked by the fused score.

        Args:
            queries: the store of the bi-encoder cache's query rows; every query is searched.

        Returns:
            :class:`~st_tasb.retrieval.search.Hits` into the corpus (up to ``2 * depth`` per query, padded with
            ``-1``).
        """
        self._check_queries(queries)
        rows = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            positions = np.arange(start, min(start + _QUERY_CHUNK, len(queries)))
            lexical, dense = self._retrieve(queries, positions)
            candidates = np.concatenate([lexical.positions, dense], axis=1)
            candidates.sort(axis=1)
            repeated = np.zeros_like(candidates, dtype=bool)
            repeated[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
            query_positions = np.repeat(positions, candidates.shape[1])
            scores = self.score_pairs(queries, self.bm25.corpus, query_positions, candidates.ravel())
            rows.append((np.where(repeated, -1, candidates), scores.reshape(candidates.shape)))
        positions = np.concatenate([row[0] for row in rows])
        return Hits.from_unordered(positions, np.concatenate([row[1] for row in rows]), self.bm25.corpus)

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        return {
            "bm25_weight": self.bm25_weight,
            "depth": self.depth,
            "scale": self.scale,
            "normalisation": f"per query, min-max between each teacher's score at rank {self.depth} and at rank 1 of "
                             "the corpus",
            "bm25": self.bm25.get_config_dict(),
            "dense": self.dense.get_config_dict(),
        }
