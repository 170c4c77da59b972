"""The one reading policy of every text file st-tasb reads, and the helpers that apply it.

Corpus and queries (JSON lines), qrels, TREC runs, the teacher score TSV, the JSON files st-tasb writes beside its
data (a clusters folder's ``settings.json``, ...) and ``--config`` files are all read by these rules:

- **Encoding**: UTF-8. A byte that is not UTF-8 is refused, naming ``file:line``.
- **Byte-order mark**: a UTF-8 byte-order mark at the very start of a file is skipped. It is the encoding's
  signature that some editors write (Windows Notepad, Excel's "UTF-8 CSV"), never data: kept, it would be glued to
  the first id and silently change the results; refused, it would make the user edit a file that holds nothing wrong.
- **Line ends**: ``\\n`` and ``\\r\\n`` are the same.
- **Compression**: a file whose name ends in ``.gz`` is read through gzip (a TREC run kept compressed, ...).
- **Integers** (a qrels grade, a run rank) are written as decimal integers: ``0.5``, ``1.0``, ``2e1`` or ``one`` is
  refused, naming ``file:line`` (never rounded, never truncated).
- **Numbers** (scores) are finite decimal numbers; anything else is refused, naming ``file:line``.
- **Types**: in a JSON record, a value of the wrong type (``"text": 12345``, a list, ``"_id": 7``) is refused,
  never converted to a string.
- **Required fields**: a record that lacks one (a JSON key, a field of a line) is refused, naming the key or the
  count of fields; an optional JSON key may be absent or ``null``.
- **Ids**: an empty id, or one with surrounding whitespace (which no other file could name), is refused. Where
  fields are separated by any whitespace (qrels, runs), whitespace cannot be part of an id.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "qrels.tsv"
    >>> _ = path.write_bytes("\\ufeffq1\\td1\\t1\\r\\nq1\\td2\\t0.5\\r\\n".encode())
    >>> [(number, line.split()) for number, line in text_lines(path, "qrels file")][0]
    (1, ['q1', 'd1', '1'])
    >>> integer_field("0.5", "relevance grade", f"{path}:2")
    Traceback (most recent call last):
    ...
    st_tasb.data.text_files.DataFormatError: .../qrels.tsv:2: relevance grade '0.5' is not an integer
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line."""


def text_lines(path: str | Path, what: str, *, skip_blank: bool = True) -> Iterator[tuple[int, str]]:
    r"""``(line number, line)`` of a UTF-8 text file by the policy of this module, without the line ends.

    Args:
        path: the file.
        what: what the file holds, for the error of a missing file (``"qrels file"``, ...).
        skip_blank: leave out lines that hold only whitespace (their numbers are still counted).

    Raises:
        FileNotFoundError: naming ``what`` and the path.
        DataFormatError: naming ``file:line`` of a line that is not valid UTF-8.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "lines.txt"
        >>> _ = path.write_bytes(b"\xef\xbb\xbffirst\r\n\ncaf\xe9\n")
        >>> next(text_lines(path, "text file"))
        (1, 'first')
        >>> list(text_lines(path, "text file"))
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: ...lines.txt:3: not valid UTF-8 (byte 0xe9 at column 4)
        >>> _ = (path.parent / "run.trec.gz").write_bytes(gzip.compress(b"q1 Q0 d1 1 2.5 tag\n"))
        >>> list(text_lines(path.parent / "run.trec.gz", "run file"))
        [(1, 'q1 Q0 d1 1 2.5 tag')]
        >>> _ = (path.parent / "cut.trec.gz").write_bytes(gzip.compress(b"q1 Q0 d1 1 2.5 tag\n")[:-9])
        >>> list(text_lines(path.parent / "cut.trec.gz", "run file"))
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: ...cut.trec.gz:2: not a complete gzip file (...)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    compressed = path.suffix == ".gz"
    line_number = 0
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if line_number == 1:
                    raw = raw.removeprefix(BYTE_ORDER_MARK)
                line = _decode(raw, path, line_number).rstrip("\r\n")
                if line.strip() or not skip_blank:
                    yield line_number, line
    except (gzip.BadGzipFile, EOFError) as error:
        if not compressed:
            raise
        raise DataFormatError(f"{path}:{line_number + 1}: not a complete gzip file ({error})") from None


def read_text(path: str | Path, what: str) -> str:
    r"""The whole text of a UTF-8 file read as one document (JSON, YAML), by the policy of this module.

    Raises:
        FileNotFoundError: naming ``what`` and the path.
        DataFormatError: naming ``file:line`` of a byte that is not valid UTF-8.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "settings.json"
        >>> _ = path.write_bytes(b'\xef\xbb\xbf{"k": 2}\r\n')
        >>> json.loads(read_text(path, "settings file"))
        {'k': 2}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    raw = path.read_bytes().removeprefix(BYTE_ORDER_MARK)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        raise _not_utf8(path, raw.count(b"\n", 0, error.start) + 1, raw[error.start], error.start - line_start) from None


def json_records(path: str | Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line of a JSON-lines file; each line must be one JSON object.

    Raises:
        FileNotFoundError: naming ``what`` and the path.
        DataFormatError: naming ``file:line`` of a line that is not UTF-8, not JSON, or not an object.
    """
    for line_number, line in text_lines(path, what):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}:{line_number}: expected a JSON object {{...}}, not {_describe(record)}")
        yield line_number, record


def string_field(record: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    """The string value of ``key`` in a JSON record; an optional key that is absent or null gives ``""``.

    Raises:
        DataFormatError: naming ``where`` and the key, for a required key that is absent or null, or a value that
            is not a string (it is never converted).

    Example:
        >>> string_field({"_id": "d1", "text": 12345}, "text", "corpus.jsonl:4")
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: corpus.jsonl:4: 'text' must be a string, not the number 12345
        >>> string_field({"_id": "d1"}, "title", "corpus.jsonl:4", required=False)
        ''
    """
    value = record.get(key)
    if value is None:
        if required:
            state = "is null" if key in record else "is missing"
            raise DataFormatError(f"{where}: the record's {key!r} {state}; every record needs one")
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {key!r} must be a string, not {_describe(value)}")
    return value


def id_field(value: str, name: str, where: str) -> str:
    """``value`` as an id: not empty, no surrounding whitespace.

    Raises:
        DataFormatError: naming ``where`` and ``name``.

    Example:
        >>> id_field(" d2", "'_id'", "corpus.jsonl:2")
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: corpus.jsonl:2: the '_id' ' d2' has surrounding whitespace, which the qrels and run files (split on whitespace) cannot name
    """
    if not value.strip():
        raise DataFormatError(f"{where}: the {name} is empty")
    if value != value.strip():
        raise DataFormatError(f"{where}: the {name} {value!r} has surrounding whitespace, which the qrels and run files "
                              "(split on whitespace) cannot name")
    return value


def integer_field(text: str, name: str, where: str) -> int:
    """A field that must be a decimal integer (``3``, ``-1``); anything else is refused, never rounded.

    Raises:
        DataFormatError: naming ``where``, ``name`` and the text.

    Example:
        >>> integer_field("2", "rank", "run.trec:7")
        2
        >>> integer_field("1.0", "rank", "run.trec:7")
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: run.trec:7: rank '1.0' is not an integer
    """
    if not _INTEGER.fullmatch(text):
        raise DataFormatError(f"{where}: {name} {text!r} is not an integer")
    return int(text)


def number_field(text: str, name: str, where: str) -> float:
    """A field that must be a finite decimal number (``0.5``, ``-3``, ``1e-4``).

    Raises:
        DataFormatError: naming ``where``, ``name`` and the text, for text that is not a number (``1,5``,
            ``1_000``, an empty field) or one that is not finite (``nan``, ``inf``).

    Example:
        >>> number_field("-2.5e1", "score", "run.trec:3")
        -25.0
        >>> number_field("nan", "score", "run.trec:3")
        Traceback (most recent call last):
        ...
        st_tasb.data.text_files.DataFormatError: run.trec:3: score 'nan' is not finite
    """
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    if math.isfinite(value):
        return value
    if _NUMBER.fullmatch(text) or text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise DataFormatError(f"{where}: {name} {text!r} is not finite")
    raise DataFormatError(f"{where}: {name} {text!r} is not a number")


def _decode(raw: bytes, path: Path, line_number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, line_number, raw[error.start], error.start) from None


def _not_utf8(path: Path, line_number: int, byte: int, offset: int) -> DataFormatError:
    return DataFormatError(f"{path}:{line_number}: not valid UTF-8 (byte 0x{byte:02x} at column {offset + 1})")


def _describe(value: Any) -> str:
    """A JSON value for a message: its JSON kind and the value (``the number 12345``, ``a list [...]``)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    kind = {int: "the number", float: "the number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"


__all__ = [
    "BYTE_ORDER_MARK", "DataFormatError", "id_field", "integer_field", "json_records", "number_field", "read_text",
    "string_field", "text_lines",
]
