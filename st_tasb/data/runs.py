"""Retrieval runs: ``{query_id: {doc_id: score}}`` dictionaries, their ranking order and TREC run files.

Ranking order follows trec_eval: documents are sorted by score, highest first, and equal scores
are broken by document id in *descending* string order (trec_eval compares ids with ``strcmp``).
trec_eval (and pytrec_eval) ignore the rank column of a run file and re-sort by that rule, so the
ranks written here are exactly the ones trec_eval evaluates.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> write_trec_run({"q1": {"d1": 0.5, "d2": 0.5, "d3": 0.9}}, path, tag="demo")
    >>> print(path.read_text(), end="")
    q1 Q0 d3 1 0.9 demo
    q1 Q0 d2 2 0.5 demo
    q1 Q0 d1 3 0.5 demo
    >>> read_trec_run(path) == {"q1": {"d3": 0.9, "d2": 0.5, "d1": 0.5}}
    True
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from st_tasb.data.files import replacing
from st_tasb.data.text_files import (
    DataFormatError,
    integer_field,
    number_field,
    text_lines,
)

Run = dict[str, dict[str, float]]
"""A retrieval run: query id -> document id -> score (higher is better)."""

_WHITESPACE = re.compile(r"\s")


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """The ``(doc_id, score)`` items of one query in trec_eval's order: score descending, then id descending.

    Example:
        >>> ranked({"b": 1.0, "a": 2.0, "c": 1.0})
        [('a', 2.0), ('c', 1.0), ('b', 1.0)]
    """
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: Run, depth: int) -> Run:
    """Keep the first ``depth`` documents of every query, in trec_eval's ranking order.

    Raises:
        ValueError: if ``depth`` is not positive.

    Example:
        >>> truncate_run({"q": {"a": 0.1, "b": 0.3, "c": 0.2}}, 2)
        {'q': {'b': 0.3, 'c': 0.2}}
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, not {depth}")
    return {qid: dict(ranked(docs)[:depth]) for qid, docs in run.items()}


def write_trec_run(run: Run, path: str | Path, tag: str = "st-tasb") -> None:
    """Write ``run`` as a TREC run file, one ``qid Q0 docid rank score tag`` line per document.

    Queries are written in sorted id order, documents in trec_eval's ranking order with ranks from 1.
    Scores are written with ``repr``, so :func:`read_trec_run` gives back exactly the same floats.

    Args:
        run: query id -> document id -> score.
        path: the file to write (parent folders are created).
        tag: the run name of the last column.

    The file is written under a temporary name and renamed when complete: an error or a crash never leaves a
    partial run under ``path``.

    Raises:
        ValueError: if the tag or an id is empty or contains whitespace, or a score is not finite
            (such lines could not be read back).
    """
    _check_token(tag, "the run tag")
    with replacing(path) as partial, partial.open("w", encoding="utf-8") as handle:
        for qid in sorted(run):
            _check_token(qid, "query id")
            for rank, (docid, score) in enumerate(ranked(run[qid]), start=1):
                _check_token(docid, f"document id of query {qid!r}")
                score = float(score)
                if not math.isfinite(score):
                    raise ValueError(f"query {qid!r}, document {docid!r}: score {score} is not finite")
                handle.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``; blank lines are skipped), by the reading policy of
    :mod:`st_tasb.data.text_files`.

    The rank column is checked to be an integer but otherwise ignored, as trec_eval does: order
    comes from the scores (see :func:`ranked`).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataFormatError: naming ``file:line`` for a line without six fields, a rank that is not an
            integer, a score that is not a finite number, or a document listed twice for one query; and for a
            file with no line at all (an empty run scores every query as zero).
    """
    run: Run = {}
    for line_number, line in text_lines(path, "run file"):
        fields = line.split()
        where = f"{path}:{line_number}"
        if len(fields) != 6:
            raise DataFormatError(f"{where}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}")
        qid, _, docid, rank, score, _ = fields
        integer_field(rank, "rank", where)
        value = number_field(score, "score", where)
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise DataFormatError(f"{where}: document {docid!r} is listed twice for query {qid!r}")
        docs[docid] = value
    if not run:
        raise DataFormatError(f"{path}: the run file holds no result line; expected lines 'qid Q0 docid rank score tag'")
    return run


def _check_token(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or _WHITESPACE.search(value):
        raise ValueError(f"{what} must be a non-empty string without whitespace, not {value!r}")
