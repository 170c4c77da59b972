"""Retrieval metrics computed the way trec_eval computes them, through pytrec_eval.

========================  =======================================================================
metric                    trec_eval measure
========================  =======================================================================
``ndcg@10``               ``ndcg_cut.10``: graded gains (gain = grade, trec_eval's linear gain),
                          log2 discount, ideal ranking from all judged documents
``mrr@10``                ``recip_rank`` of the run cut to its first 10 documents per query (trec_eval
                          has no cut-off for it), i.e. 1 / rank of the first relevant document in the
                          top 10, else 0
``recall@100``            ``recall.100``
``recall@1000``           ``recall.1000``
``map``                   ``map`` over the whole run as given
========================  =======================================================================

The binary measures (all but nDCG) count a document as relevant when its grade is at least
``relevance_threshold`` (pytrec_eval's ``relevance_level``; TREC-DL uses 2). Documents are ranked
by score, ties broken by document id descending (see :mod:`st_tasb.data.runs`).

Which queries are averaged over: every query of the qrels, including queries whose judgements are
all below the threshold (they score 0 on the binary measures, as in trec_eval). A qrels query with
no run entries counts as 0 on every metric (trec_eval ``-c``) unless ``missing_as_zero=False``, in
which case it is left out. Run queries without judgements are ignored. Both are named in a warning (how
many, and up to five ids); a run that shares no query with the qrels is refused (its ids and the qrels'
cannot be meant to match).

Example:
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d9": 1}}
    >>> run = {"q1": {"d0": 0.9, "d1": 0.8}}
    >>> evaluate_run(run, qrels)["mrr@10"]  # q1: 1/2, q2 has no run entries and counts as 0
    0.25
    >>> evaluate_run(run, qrels, missing_as_zero=False)["mrr@10"]
    0.5
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pytrec_eval

from st_tasb.data.beir import Qrels
from st_tasb.data.runs import Run, truncate_run

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map")
"""The metrics :func:`evaluate_run` reports, in order."""

_FULL_RUN_MEASURES = {"ndcg_cut_10": "ndcg@10", "recall_100": "recall@100", "recall_1000": "recall@1000", "map": "map"}
_MRR_DEPTH = 10


@dataclass(frozen=True)
class RunEvaluation:
    """Metrics of a run, with the per-query values and which queries were counted.

    Attributes:
        metrics: the mean of each metric of :data:`METRICS` over the evaluated queries.
        per_query: query id -> metric -> value, for every evaluated query (zeros for the qrels
            queries without run entries when they are counted).
        num_queries: how many queries the means are over.
        missing_queries: qrels queries without run entries (sorted), counted as zero or left out.
        ignored_queries: how many run queries have no judgements (ignored).
        ignored_examples: up to five of those run queries (sorted).
        missing_as_zero: whether :attr:`missing_queries` count as zero (else they are left out).
    """

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    missing_queries: tuple[str, ...]
    ignored_queries: int
    ignored_examples: tuple[str, ...] = ()
    missing_as_zero: bool = True

    def warnings(self) -> list[str]:
        """What the means ignore or zero, each with a count and up to five ids (empty when nothing is).

        Example:
            >>> details = evaluate_run_details({"q1": {"d1": 1.0}, "q7": {"d1": 1.0}}, {"q1": {"d1": 1}, "q2": {"d2": 1}})
            >>> details.warnings()
            ["1 of the 2 qrels queries have no run entries and count as 0 on every metric (trec_eval -c), e.g. 'q2'", "1 run queries have no judgements and are ignored, e.g. 'q7'"]
        """
        found = []
        if self.missing_queries:
            qrels_queries = self.num_queries + (0 if self.missing_as_zero else len(self.missing_queries))
            effect = "count as 0 on every metric (trec_eval -c)" if self.missing_as_zero else "are left out of the means"
            found.append(f"{len(self.missing_queries)} of the {qrels_queries} qrels queries have no run entries and "
                         f"{effect}, {examples(self.missing_queries)}")
        if self.ignored_queries:
            found.append(f"{self.ignored_queries} run queries have no judgements and are ignored, "
                         f"{examples(self.ignored_examples)}")
        return found


def examples(ids: Iterable[str], limit: int = 5) -> str:
    """``e.g. 'a', 'b'``: up to ``limit`` ids, for a message that counts them.

    Example:
        >>> examples(["q1", "q2", "q3"], limit=2)
        "e.g. 'q1', 'q2'"
    """
    return "e.g. " + ", ".join(repr(value) for value in itertools.islice(ids, limit))


def evaluate_run_details(
    run: Run, qrels: Qrels, *, relevance_threshold: int = 1, missing_as_zero: bool = True
) -> RunEvaluation:
    """Evaluate ``run`` against ``qrels`` and keep the per-query values (see the module docstring).

    Args:
        run: query id -> document id -> score (string ids, as in the qrels).
        qrels: query id -> document id -> integer grade.
        relevance_threshold: the lowest grade that counts as relevant for the binary measures.
        missing_as_zero: count qrels queries without run entries as zero (trec_eval ``-c``);
            ``False`` leaves them out of the means.

    Returns:
        A :class:`RunEvaluation`.

    Raises:
        TypeError: if a query or document id is not a string (pytrec_eval matches strings only).
        ValueError: if the qrels are empty, or the run has no entries for any query of the qrels (naming a few
            ids of each).

    Example:
        >>> details = evaluate_run_details({"q1": {"d1": 1.0}, "q7": {"d1": 1.0}}, {"q1": {"d1": 2}, "q2": {"d2": 1}})
        >>> details.num_queries, details.missing_queries, details.ignored_queries
        (2, ('q2',), 1)
        >>> details.per_query["q1"]["ndcg@10"], details.per_query["q2"]["ndcg@10"]
        (1.0, 0.0)
    """
    if not qrels:
        raise ValueError("the qrels are empty")
    _check_string_ids(qrels, "qrels")
    _check_string_ids(run, "run")
    judged = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    if not judged:
        raise ValueError(
            f"no query to evaluate: the run has no entries for any of the {len(qrels)} qrels queries ("
            f"{examples(sorted(qrels))}); its {len(run)} queries are {examples(sorted(run)) if run else 'none'}: "
            "do the query ids match?"
        )
    missing = tuple(sorted(qid for qid in qrels if qid not in judged))
    ignored = sorted(qid for qid in run if qid not in qrels)

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100,1000", "map"}, relevance_threshold)
    full = evaluator.evaluate(judged)
    mrr_evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_threshold)
    mrr = mrr_evaluator.evaluate(truncate_run(judged, _MRR_DEPTH))

    per_query = {
        qid: {
            **{name: values[measure] for measure, name in _FULL_RUN_MEASURES.items()},
            "mrr@10": mrr[qid]["recip_rank"],
        }
        for qid, values in full.items()
    }
    if missing_as_zero:
        per_query.update({qid: dict.fromkeys(METRICS, 0.0) for qid in missing})
    means = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in METRICS}
    logger.info("evaluated %d queries", len(per_query))
    return RunEvaluation(means, per_query, len(per_query), missing, len(ignored), tuple(ignored[:5]), missing_as_zero)


def evaluate_run(
    run: Run, qrels: Qrels, *, relevance_threshold: int = 1, missing_as_zero: bool = True
) -> dict[str, float]:
    """The mean ``ndcg@10``, ``mrr@10``, ``recall@100``, ``recall@1000`` and ``map`` of ``run``.

    Arguments, rules and errors as in :func:`evaluate_run_details`; the number of evaluated queries
    is logged at INFO level, and what the means ignore or zero (:meth:`RunEvaluation.warnings`) as warnings.

    Example:
        >>> qrels = {"q1": {"d1": 1, "d2": 2}}
        >>> metrics = evaluate_run({"q1": {"d2": 0.9, "d3": 0.8, "d1": 0.7}}, qrels, relevance_threshold=2)
        >>> metrics["mrr@10"], metrics["recall@100"]
        (1.0, 1.0)
    """
    details = evaluate_run_details(run, qrels, relevance_threshold=relevance_threshold, missing_as_zero=missing_as_zero)
    for warning in details.warnings():
        logger.warning("%s", warning)
    return details.metrics


def _check_string_ids(table: Run | Qrels, what: str) -> None:
    """Check query ids and the first document id of every query (checking every document is too slow)."""
    for qid, docs in table.items():
        if not isinstance(qid, str):
            raise TypeError(f"{what}: query id {qid!r} is a {type(qid).__name__}; ids must be strings")
        first = next(iter(docs), "")
        if not isinstance(first, str):
            raise TypeError(
                f"{what}: document id {first!r} of query {qid!r} is a {type(first).__name__}; ids must be strings"
            )
