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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from st_tasb.data.texts import TextStore

Qrels = dict[str, dict[str, int]]


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line."""


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


def text_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    r"""``(line number, line)`` of every non-blank line of a UTF-8 text file.

    Args:
        path: the file.
        what: what the file holds, for the error of a missing file (``"qrels file"``, ...).

    Raises:
        FileNotFoundError: naming ``what`` and the path.
        DataFormatError: naming ``file:line`` of a line that is not valid UTF-8.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "lines.txt"
        >>> _ = path.write_bytes(b"first\n\ncaf\xe9\n")
        >>> next(text_lines(path, "text file"))
        (1, 'first\n')
        >>> list(text_lines(path, "text file"))
        Traceback (most recent call last):
        ...
        st_tasb.data.beir.DataFormatError: ...lines.txt:3: not valid UTF-8 (byte 0xe9 at column 4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"{path}:{line_number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
                ) from None
            if line.strip():
                yield line_number, line


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line of a BEIR JSON-lines file.

    Raises:
        FileNotFoundError: for a missing file.
        DataFormatError: naming file and line of a line that is not UTF-8, or not a JSON object with an ``_id``.
    """
    for line_number, line in text_lines(path, "JSON-lines file"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "_id" not in record:
            raise DataFormatError(f"{path}:{line_number}: a record needs an '_id' field")
        yield line_number, record


def _read_jsonl(path: Path, fields: tuple[str, ...], name: str) -> TextStore:
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file not found: {path}")
    ids: list[str] = []
    texts: list[str] = []
    for _, record in jsonl_records(path):
        ids.append(str(record["_id"]))
        texts.append(" ".join(str(record.get(f) or "").strip() for f in fields).strip())
    if not ids:
        raise DataFormatError(f"{path}: no records")
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
        try:
            qrels.setdefault(qid, {})[docid] = int(float(grade))
        except ValueError:
            raise DataFormatError(f"{path}:{line_number}: relevance grade {grade!r} is not a number") from None
    if not qrels:
        raise DataFormatError(f"{path}: no judgements")
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR-layout folder; corpus texts are ``title + " " + text``.

    Raises:
        FileNotFoundError: naming the missing file (and the splits that do exist).
        DataFormatError: naming file and line of a malformed record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for split {split!r}: {qrels_path} (available splits: {available})")
    corpus = _read_jsonl(folder / "corpus.jsonl", ("title", "text"), "corpus")
    queries = _read_jsonl(folder / "queries.jsonl", ("text",), "queries")
    return BeirData(corpus=corpus, queries=queries, qrels=load_qrels(qrels_path))


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
