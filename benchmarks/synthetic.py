"""Synthetic MS MARCO-scale inputs: teacher-scored pairs, query and passage stores, query clusters.

The shapes follow MS MARCO passage: about 40M (query, positive, negative) pairs over about 400K training
queries and 8.8M passages, 2,000 query clusters. Query ids are distinct integers up to 1.2M (like the
real qids), passage ids are ``0..n_passages-1`` (like the real pids). Pairs come in random order (each
picks a random query, so the number of pairs per query varies), every query has one positive, negatives
are random-looking passages that never repeat within a query, and the two teacher scores are normally distributed (their margin can be negative,
as with the real T2 teacher). Texts are the ids written as strings: short, so that the 8.8M-passage store
stays small, but real Arrow strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.fingerprint import generate_random_fingerprint

from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters

MSMARCO_PASSAGES = 8_841_823


@dataclass
class PairArrays:
    """The columns of a teacher score table as numpy arrays."""

    query_ids: np.ndarray
    positive_ids: np.ndarray
    negative_ids: np.ndarray
    pos_scores: np.ndarray
    neg_scores: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in vars(self).values())


def query_ids(n_queries: int, seed: int = 0) -> np.ndarray:
    """``n_queries`` distinct int64 query ids drawn from ``0..3 * n_queries``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(3 * n_queries, size=n_queries, replace=False)).astype(np.int64)


def pairs(n_pairs: int, qids: np.ndarray, n_passages: int, seed: int = 1) -> PairArrays:
    """``n_pairs`` random teacher-scored pairs over the queries ``qids`` and passages ``0..n_passages-1``."""
    rng = np.random.default_rng(seed)
    query_of_pair = rng.integers(0, len(qids), size=n_pairs)
    positive_of_query = rng.integers(0, n_passages, size=len(qids))
    # a random passage per query, then the query's k-th pair takes it + k * 7919: random-looking negatives
    # that never repeat within a query (a repeated pair is refused by training)
    order = np.argsort(query_of_pair, kind="stable")
    counts = np.bincount(query_of_pair, minlength=len(qids))
    rank = np.empty(n_pairs, dtype=np.int64)
    rank[order] = np.arange(n_pairs) - np.repeat(np.cumsum(counts) - counts, counts)
    first_negative = rng.integers(0, n_passages, size=len(qids), dtype=np.int64)
    positive_ids = positive_of_query[query_of_pair].astype(np.int64)
    negative_ids = (first_negative[query_of_pair] + rank * 7919) % n_passages
    negative_ids[negative_ids == positive_ids] += 1  # a negative that is its own positive is refused (mod n below)
    return PairArrays(
        query_ids=qids[query_of_pair],
        positive_ids=positive_ids,
        negative_ids=negative_ids % n_passages,
        pos_scores=rng.normal(8.0, 2.0, size=n_pairs).astype(np.float32),
        neg_scores=rng.normal(2.0, 3.0, size=n_pairs).astype(np.float32),
    )


def id_store(ids: np.ndarray, name: str) -> TextStore:
    """A :class:`TextStore` of ``ids`` whose texts are the ids as strings (built in Arrow, no Python loop)."""
    id_array = pa.array(ids)
    table = pa.table({"id": id_array, "text": pc.cast(id_array, pa.string())})
    return TextStore(Dataset(table, fingerprint=generate_random_fingerprint()), name=name)


def random_clusters(qids: np.ndarray, n_clusters: int, seed: int = 2, sigma: float = 0.75) -> QueryClusters:
    """Each query in one of ``n_clusters`` clusters of lognormal sizes (every cluster non-empty).

    k-means clusters of real queries are uneven; cluster weights are drawn lognormal(0, ``sigma``), so at
    400K queries and 2,000 clusters the sizes have mean 200 and run from a handful to about a thousand.
    """
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, sigma, size=n_clusters)
    labels = np.concatenate(
        [np.arange(n_clusters), rng.choice(n_clusters, size=len(qids) - n_clusters, p=weights / weights.sum())]
    )
    rng.shuffle(labels)
    return QueryClusters(qids, labels, settings={"synthetic": True, "k": n_clusters, "sigma": sigma})
