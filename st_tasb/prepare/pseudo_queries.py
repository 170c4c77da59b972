"""Pseudo-queries made from a bare corpus: training queries for a domain that has no (or few) judged queries.

Every document of a BEIR ``corpus.jsonl`` gives one pseudo-query and one positive passage:

- ``source="title"``: the query is the document's title; the positive is its text without the title;
- ``source="first-sentence"``: the query is the first sentence of its text; the positive is the title and
  the rest of the text.

The positive never contains the query's words verbatim (that would teach copying, not retrieval). The
positives are new passages, stored next to the original documents under ``prefix + document id``; the
source document itself holds the query verbatim, so it is excluded from the pseudo-query's negatives
(:attr:`PseudoQueries.exclude`, for :func:`~st_tasb.prepare.mining.mine_candidates`).

Example:
    >>> import json, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> records = [{"_id": "d1", "title": "Cats purr", "text": "Purring is a sound. It signals calm."},
    ...            {"_id": "d2", "title": "Dogs bark", "text": "Barking warns. The pack listens."}]
    >>> _ = (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in records))
    >>> pseudo = make_pseudo_queries(folder / "corpus.jsonl", source="first-sentence")
    >>> pseudo.queries["pseudo:d1"], pseudo.corpus["pseudo:d1"], pseudo.corpus["d1"]
    ('Purring is a sound.', 'Cats purr It signals calm.', 'Cats purr Purring is a sound. It signals calm.')
    >>> pseudo.qrels["pseudo:d1"], pseudo.exclude["pseudo:d1"]
    ({'pseudo:d1': 1}, ['d1'])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from datasets import Dataset

from st_tasb.data.beir import BeirData, DataFormatError, Qrels, beir_records
from st_tasb.data.texts import TextStore

logger = logging.getLogger(__name__)

PSEUDO_QUERY_SOURCES = ("title", "first-sentence")
DEFAULT_PREFIX = "pseudo:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class PseudoQueries:
    """Pseudo-queries of a corpus, with the texts and judgements to mine and train on them.

    Attributes:
        queries: one pseudo-query per usable document, id ``prefix + document id``.
        corpus: the original documents (``title + " " + text``, as :func:`~st_tasb.data.beir.load_beir` reads
            them) followed by the positive passages, id ``prefix + document id``.
        qrels: each pseudo-query's positive passage (grade 1).
        exclude: each pseudo-query's source document, never to be used as its negative.
        skipped: ``file:line`` of the documents that gave no pseudo-query (empty title or single sentence).
        prefix: what was put before a document id to make its pseudo-query's and positive passage's ids.
    """

    queries: TextStore
    corpus: TextStore
    qrels: Qrels
    exclude: dict[str, list[str]]
    skipped: list[str]
    prefix: str = DEFAULT_PREFIX

    @property
    def data(self) -> BeirData:
        """The pseudo-queries as a :class:`~st_tasb.data.beir.BeirData` (mine it with ``exclude=self.exclude``)."""
        return BeirData(self.corpus, self.queries, self.qrels)

    def with_judged(self, data: BeirData) -> tuple[BeirData, dict[str, list[str]]]:
        """Join judged queries of the same corpus to the pseudo-queries, for mining both together.

        Args:
            data: real queries and qrels over the same corpus (its corpus is replaced by :attr:`corpus`).

        Returns:
            ``(data, exclude)``: the joint data, and the documents never to be used as negatives: each
            pseudo-query's source document, and for each judged query the positive passages made from its
            judged documents (near-copies of them).

        Raises:
            ValueError: if a real query id is also a pseudo-query id.
        """
        clash = set(data.qrels) & set(self.qrels)
        if clash:
            raise ValueError(f"query ids used by both the judged and the pseudo-queries: {sorted(clash)[:5]}")
        exclude = dict(self.exclude)
        for qid, docs in data.qrels.items():
            near_copies = [self.prefix + doc for doc in docs if self.prefix + doc in self.qrels]
            if near_copies:
                exclude[qid] = near_copies
        queries = Dataset.from_dict(
            {
                "id": data.queries.ids.cast("string").to_pylist() + self.queries.ids.to_pylist(),
                "text": data.queries.texts(np.arange(len(data.queries))) + self.queries.texts(np.arange(len(self.queries))),
            }
        )
        joint = BeirData(self.corpus, TextStore(queries, name="queries"), {**data.qrels, **self.qrels})
        return joint, exclude

def make_pseudo_queries(
    corpus_file: str | Path,
    *,
    source: Literal["title", "first-sentence"] = "title",
    prefix: str = DEFAULT_PREFIX,
    skip_unusable: bool = False,
    documents: Collection[str] | None = None,
    query_documents: Collection[str] | None = None,
) -> PseudoQueries:
    """Make one pseudo-query and one positive passage from every document of a BEIR ``corpus.jsonl``.

    Args:
        corpus_file: the corpus, one JSON record per line with ``_id``, ``title`` and ``text``.
        source: ``"title"`` or ``"first-sentence"`` (see the module docstring).
        prefix: put before a document id to make its pseudo-query's and positive passage's ids.
        skip_unusable: leave out documents that give no pseudo-query (an empty title; a text of one
            sentence) and list them in :attr:`PseudoQueries.skipped` (default: such a document is an error).
        documents: read only the documents with these ids (default: all).
        query_documents: make pseudo-queries only of the documents with these ids (default: all that are read).

    Returns:
        :class:`PseudoQueries`.

    Raises:
        FileNotFoundError: if ``corpus_file`` does not exist.
        DataFormatError: naming file and line of a malformed record, of a repeated id (with the line of its
            first use), of an id that already starts with ``prefix``, or of an unusable document
            (unless ``skip_unusable``); or if no document gives a pseudo-query.
        ValueError: for an unknown ``source`` or an empty ``prefix``.
    """
    if source not in PSEUDO_QUERY_SOURCES:
        raise ValueError(f"source must be one of {PSEUDO_QUERY_SOURCES}, not {source!r}")
    if not prefix:
        raise ValueError("prefix must not be empty: pseudo ids would equal document ids")
    path = Path(corpus_file)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    query_texts: list[str] = []
    positive_texts: list[str] = []
    used_ids: list[str] = []
    first_line: dict[str, int] = {}
    skipped: list[str] = []
    for line_number, doc_id, title, text in beir_records(path):
        where = f"{path}:{line_number}"
        if doc_id in first_line:
            raise DataFormatError(f"{where}: id {doc_id!r} repeats the record of line {first_line[doc_id]}")
        if doc_id.startswith(prefix):
            raise DataFormatError(f"{where}: id {doc_id!r} starts with the pseudo-query prefix {prefix!r}; choose another prefix")
        first_line[doc_id] = line_number
        if documents is not None and doc_id not in documents:
            continue
        doc_ids.append(doc_id)
        doc_texts.append(f"{title} {text}".strip())
        if query_documents is not None and doc_id not in query_documents:
            continue
        pair = _split(title, text, source)
        if pair is None:
            problem = "an empty title" if source == "title" else "no second sentence (nothing left as the positive)"
            if not skip_unusable:
                raise DataFormatError(
                    f"{where}: document {doc_id!r} has {problem}, so it gives no {source} pseudo-query; "
                    "pass skip_unusable=True (st-tasb mine --skip-unusable) to leave such documents out"
                )
            skipped.append(where)
            continue
        query_texts.append(pair[0])
        positive_texts.append(pair[1])
        used_ids.append(doc_id)
    if not used_ids:
        raise DataFormatError(f"{path}: no document gives a {source} pseudo-query")
    if skipped:
        logger.warning("%d documents gave no %s pseudo-query and were left out, e.g. %s", len(skipped), source, skipped[:3])
    pseudo_ids = [prefix + doc_id for doc_id in used_ids]
    corpus = Dataset.from_dict({"id": doc_ids + pseudo_ids, "text": doc_texts + positive_texts})
    queries = Dataset.from_dict({"id": pseudo_ids, "text": query_texts})
    return PseudoQueries(
        queries=TextStore(queries, name=f"pseudo-queries ({path})"),
        corpus=TextStore(corpus, name=f"corpus with pseudo-query positives ({path})"),
        qrels={pid: {pid: 1} for pid in pseudo_ids},
        exclude={pid: [doc_id] for pid, doc_id in zip(pseudo_ids, used_ids)},
        skipped=skipped,
        prefix=prefix,
    )


def _split(title: str, text: str, source: str) -> tuple[str, str] | None:
    """``(query, positive)`` of one document, or ``None`` when it gives none."""
    if source == "title":
        return (title, text) if title and text else None
    sentences = _SENTENCE_END.split(text, maxsplit=1)
    if len(sentences) < 2 or not sentences[1].strip():
        return None
    return sentences[0].strip(), f"{title} {sentences[1].strip()}".strip()
