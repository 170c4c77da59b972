"""Loading retrieval data in the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Example:
    >>> import json, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\\n")
    >>> _ = (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what?"}) + "\\n")
    >>> (root / "qrels").mkdir()
    >>> _ = (root / "qrels" / "train.tsv").write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\n")
    >>> data = load_beir(root, split="train")
    >>> data.corpus["d1"], data.qrels
    ('T body', {'q1': {'d1': 1}})
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from st_tasb.data.text_files import (
    DataFormatError,
    id_field,
    integer_field,
    json_records,
    string_field,
    text_lines,
)
from st_tasb.data.texts import TextStore

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


@dataclass
class BeirData:
    """A BEIR-layout retrieval dataset: passages, queries and relevance judgements of one split."""

    corpus: TextStore
    queries: TextStore
    qrels: Qrels

    def judged_queries(self) -> TextStore:
        """The queries that have at least one judgement in :attr:`qrels`, in file order."""
        positions = self.queries.positions(sorted(self.qrels), missing="mask")
        positions = sorted(int(p) for p in positions if p >= 0)
        return TextStore(self.queries.dataset.select(positions), name=self.queries.name)


def beir_records(path: str | Path) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, _id, title, text)`` of every record of a BEIR ``corpus.jsonl`` or ``queries.jsonl``.

    By the reading policy of :mod:`st_tasb.data.text_files`: ``_id`` and ``text`` are required strings (``text`` may
    be empty), ``title`` an optional string (``""`` when absent or null); title and text are stripped; other keys are
    ignored.

    Raises:
        FileNotFoundError: for a missing file.
        DataFormatError: naming ``file:line`` of a line that is not a JSON object, lacks ``_id`` or ``text``, holds a
            value of the wrong type, or an ``_id`` that is empty or has surrounding whitespace.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "corpus.jsonl"
        >>> _ = path.write_text('{"_id": "d1", "text": " body"}\\n{"_id": "d2", "text": ["a", "b"]}\\n')
        >>> next(beir_records(path))
        (1, 'd1', '', 'body')
        >>> list(beir_records(path))
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: .../corpus.jsonl:2: 'text' must be a string, not a list ["a", "b"]
    """
    for line_number, record in json_records(path, "JSON-lines file"):
        where = f"{path}:{line_number}"
        record_id = id_field(string_field(record, "_id", where), "'_id'", where)
        title = string_field(record, "title", where, required=False).strip()
        yield line_number, record_id, title, string_field(record, "text", where).strip()


def _read_jsonl(path: Path, title: bool, name: str) -> TextStore:
    """The records of a corpus or queries file, by the policy of :func:`load_beir`."""
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file not found: {path}")
    ids: list[str] = []
    texts: list[str] = []
    first: dict[str, tuple[int, int]] = {}  # id -> (line, position)
    repeats = 0
    for line_number, record_id, title_text, body in beir_records(path):
        text = f"{title_text} {body}".strip() if title else body
        if record_id in first:
            earlier, position = first[record_id]
            if texts[position] != text:
                raise DataFormatError(f"{path}:{line_number}: '_id' {record_id!r} again (first at line {earlier}) with "
                                      "another text: which one is meant?")
            repeats += 1
            continue
        first[record_id] = (line_number, len(ids))
        ids.append(record_id)
        texts.append(text)
    if not ids:
        raise DataFormatError(f"{path}: no records")
    if repeats:
        logger.warning("%s: %d record(s) repeat an earlier one exactly (same _id and text); each is kept once", path, repeats)
    return TextStore(Dataset.from_dict({"id": ids, "text": texts}), name=f"{name} ({path})")


def load_qrels(path: str | Path) -> Qrels:
    """Read a qrels file: BEIR TSV with a ``query-id corpus-id score`` header, or TREC ``qid 0 docid rel``.

    Raises:
        DataFormatError: naming file and line for a row with the wrong number of fields or a
            non-integer grade, or for a file without judgements.
    """
    qrels: Qrels = {}
    for line_number, line in text_lines(path, "qrels file"):
        fields = line.split()
        if line_number == 1 and fields[0] in ("query-id", "query_id", "qid"):
            continue
        if len(fields) == 3:
            qid, docid, grade = fields
        elif len(fields) == 4:
            qid, _, docid, grade = fields
        else:
            raise DataFormatError(f"{path}:{line_number}: expected 3 (BEIR) or 4 (TREC) fields, got {len(fields)}")
        value = integer_field(grade, "relevance grade", f"{path}:{line_number}")
        judged = qrels.setdefault(qid, {})
        if docid in judged and judged[docid] != value:
            raise DataFormatError(f"{path}:{line_number}: query {qid!r} judges document {docid!r} again with another "
                                  f"grade ({judged[docid]}, now {value})")
        judged[docid] = value
    if not qrels:
        raise DataFormatError(f"{path}: no judgements")
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR-layout folder; corpus texts are ``title + " " + text``.

    Every file is read by the reading policy of :mod:`st_tasb.data.text_files` (a byte-order mark skipped, CRLF as
    LF, a value of the wrong type, a missing ``_id`` or ``text`` or a non-integer grade refused at ``file:line``).
    The policy for records that repeat or are incomplete (an error names ``file:line`` wherever the data would
    otherwise change the results):

    - ``corpus.jsonl`` / ``queries.jsonl``: an empty ``_id``, or one with surrounding whitespace, is an error; an
      ``_id`` given twice with another text is an error; one repeated exactly is kept once (a warning counts them);
      an empty text (``"text": ""``) is kept (it still has an id that qrels may name);
    - ``qrels/SPLIT.tsv``: a (query, document) pair judged twice with another grade is an error; repeated with the
      same grade it is kept once; a query or document of the qrels that the texts lack is named where it is used
      (training and evaluation name the missing ids).

    Raises:
        FileNotFoundError: naming the missing file (and the splits that do exist).
        DataFormatError: naming file and line of a malformed record, by the policy above.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for split {split!r}: {qrels_path} (available splits: {available})")
    corpus = _read_jsonl(folder / "corpus.jsonl", True, "corpus")
    queries = _read_jsonl(folder / "queries.jsonl", False, "queries")
    return BeirData(corpus=corpus, queries=queries, qrels=load_qrels(qrels_path))


def load_corpus(folder: str | Path) -> TextStore:
    """The passages of a folder's ``corpus.jsonl`` alone (a bare corpus: no queries, no qrels), read as
    :func:`load_beir` reads them.

    Raises:
        FileNotFoundError: naming the folder, or its missing ``corpus.jsonl``.
        DataFormatError: naming file and line of a malformed record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    return _read_jsonl(folder / "corpus.jsonl", True, "corpus")


def write_beir(data: BeirData, folder: str | Path, split: str = "train") -> Path:
    """Write ``data`` as a BEIR folder (``corpus.jsonl`` with empty titles, ``queries.jsonl``, ``qrels/SPLIT.tsv``).

    Raises:
        FileExistsError: if the folder already holds a ``corpus.jsonl`` (a user's data is never overwritten).

    Example:
        >>> import tempfile
        >>> data = BeirData(TextStore.from_records([("d1", "T body")]), TextStore.from_records([("q1", "what?")]),
        ...                 {"q1": {"d1": 1}})
        >>> load_beir(write_beir(data, Path(tempfile.mkdtemp()) / "copy"), "train").qrels
        {'q1': {'d1': 1}}
    """
    folder = Path(folder)
    if (folder / "corpus.jsonl").exists():
        raise FileExistsError(f"{folder / 'corpus.jsonl'} exists: choose an empty folder")
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name, store, extra in (("corpus", data.corpus, {"title": ""}), ("queries", data.queries, {})):
        ids, texts = store.ids.to_pylist(), store.texts(range(len(store)))
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for record_id, text in zip(ids, texts):
                handle.write(json.dumps({"_id": str(record_id), **extra, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in data.qrels.items():
            handle.writelines(f"{qid}\t{doc}\t{grade}\n" for doc, grade in docs.items())
    return folder
