"""One reading policy for every text file st-tasb reads (issue 30, item 2), checked as a property.

Every line-based reader (corpus.jsonl, queries.jsonl, qrels, TREC runs, the teacher score TSV) gets the same valid
records and the same malformed variants, and must behave the same way:

- a UTF-8 byte-order mark at the start of the file, and CRLF line ends, change nothing;
- a fractional, non-numeric or empty value where an integer (a qrels grade, a run rank) or a number belongs, a value of
  the wrong JSON type, a missing field or key, and an empty id are refused with a ``DataFormatError`` naming
  ``file:line``;
- no reader returns an id with surrounding whitespace: a padded id is refused at ``file:line``, except where fields are
  separated by any whitespace (qrels, runs), so that padding cannot be part of an id.

The files read as one document (the clusters folder's settings.json, a ``--config`` file) follow the same rule for a
byte-order mark and CRLF.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from st_tasb.data.beir import DataFormatError, load_beir, load_qrels
from st_tasb.data.runs import read_trec_run

POLICY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MISSING = object()  # an override that drops the field
BOM = "\ufeff"

ids = st.text("abcdefxyz0123456789_-", min_size=1, max_size=8)


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to six records with distinct query and document ids, an integer grade and rank and a finite score."""
    size = draw(st.integers(1, 6))
    qids = draw(st.lists(ids, min_size=size, max_size=size, unique=True))
    dids = draw(st.lists(ids, min_size=size, max_size=size, unique=True))
    return [
        {"qid": f"q{qid}", "did": f"d{did}", "neg": f"n{did}", "grade": draw(st.integers(0, 3)), "rank": rank,
         "score": draw(st.floats(-100, 100, allow_nan=False).map(lambda value: round(value, 3))),
         "text": draw(st.text("abc xyz.", max_size=20))}
        for rank, (qid, did) in enumerate(zip(qids, dids), start=1)
    ]


@dataclass
class Reader:
    """A reader under the policy: how a record becomes a line, and which fields of a line are of which kind."""

    name: str
    line: Callable[[dict[str, Any]], str]
    read: Callable[[Path, Path], Any]  # (the file, a scratch folder) -> what it read
    header: str = ""
    integers: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()  # JSON values that must be present and strings
    optional: tuple[str, ...] = ()  # JSON values that may be absent or null, else strings
    ids: tuple[str, ...] = ()
    whitespace_separated: bool = False


def _fields(record: dict[str, Any], names: tuple[str, ...], separator: str) -> str:
    return separator.join(str(record[name]) for name in names if record[name] is not MISSING)


def _json(record: dict[str, Any], keys: dict[str, str]) -> str:
    return json.dumps({key: record[field] for key, field in keys.items() if record[field] is not MISSING})


def _beir(which: str) -> Callable[[Path, Path], Any]:
    def read(path: Path, scratch: Path) -> Any:
        folder = path.parent
        other = folder / ("queries.jsonl" if which == "corpus" else "corpus.jsonl")
        other.write_text(json.dumps({"_id": "x1", "title": "", "text": "other"}) + "\n")
        (folder / "qrels").mkdir(exist_ok=True)
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nx1\tx1\t1\n")
        data = load_beir(folder)
        store = data.corpus if which == "corpus" else data.queries
        return dict(zip(store.ids.to_pylist(), store.texts(range(len(store)))))

    return read


def _table(path: Path, scratch: Path) -> Any:
    from st_tasb.prepare.table import TeacherScoreTable

    table = TeacherScoreTable.from_tsv(path, cache_dir=scratch / "cache", show_progress_bar=False)
    return table.dataset.to_dict()


READERS = {
    "corpus": Reader("corpus.jsonl", lambda r: _json(r, {"_id": "did", "title": "qid", "text": "text"}),
                     _beir("corpus"), strings=("did", "text"), optional=("qid",), ids=("did",)),
    "queries": Reader("queries.jsonl", lambda r: _json(r, {"_id": "qid", "text": "text"}), _beir("queries"),
                      strings=("qid", "text"), ids=("qid",)),
    "qrels": Reader("qrels.tsv", lambda r: _fields(r, ("qid", "did", "grade"), "\t"), lambda path, _: load_qrels(path),
                    header="query-id\tcorpus-id\tscore", integers=("grade",), ids=("qid", "did"),
                    whitespace_separated=True),
    "run": Reader("run.trec", lambda r: _fields({**r, "Q0": "Q0", "tag": "st-tasb"},
                                                ("qid", "Q0", "did", "rank", "score", "tag"), " "),
                  lambda path, _: read_trec_run(path), integers=("rank",), numbers=("score",), ids=("qid", "did"),
                  whitespace_separated=True),
    "teacher scores": Reader("scores.tsv", lambda r: _fields(r, ("score", "score", "qid", "did", "neg"), "\t"), _table,
                             numbers=("score",), ids=("qid", "did", "neg")),
}

WRONG_TYPES = [12345, 1.5, ["a", "list"], {"an": "object"}, True, None]


def write(reader: Reader, rows: list[dict[str, Any]], folder: Path, *, bom: bool = False, newline: str = "\n") -> Path:
    lines = ([reader.header] if reader.header else []) + [reader.line(row) for row in rows]
    path = folder / reader.name
    path.write_bytes(((BOM if bom else "") + "".join(line + newline for line in lines)).encode("utf-8"))
    return path


def line_of(reader: Reader, index: int) -> int:
    return index + 1 + (1 if reader.header else 0)


@POLICY
@given(st.sampled_from(sorted(READERS)), records(), st.booleans())
def test_a_byte_order_mark_and_crlf_line_ends_change_nothing(name: str, rows: list[dict], crlf: bool) -> None:
    reader = READERS[name]
    with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as marked:
        expected = reader.read(write(reader, rows, Path(plain)), Path(plain))
        variant = write(reader, rows, Path(marked), bom=True, newline="\r\n" if crlf else "\n")
        assert reader.read(variant, Path(marked)) == expected


def _malformed(reader: Reader) -> list[tuple[str, Any]]:
    """Every (field, value) that the reader must refuse at file:line, by the kind of each field."""
    cases: list[tuple[str, Any]] = []
    for field in reader.integers:
        cases += [(field, value) for value in ("0.5", "1.0", "2e1", "one", "")]
    for field in reader.numbers:
        cases += [(field, value) for value in ("abc", "1,5", "")]
    for field in reader.strings:
        cases += [(field, value) for value in WRONG_TYPES]
    for field in reader.optional:
        cases += [(field, value) for value in WRONG_TYPES if value is not None]
    for field in reader.ids:
        cases += [(field, ""), (field, "   ")]
        if not reader.whitespace_separated:
            cases += [(field, " padded"), (field, "padded\t")]
    required = reader.strings or reader.ids + reader.integers + reader.numbers
    cases += [(field, MISSING) for field in required]
    return cases


@st.composite
def malformed_files(draw: st.DrawFn) -> tuple[Reader, list[dict], int, str, Any]:
    reader = READERS[draw(st.sampled_from(sorted(READERS)))]
    rows = draw(records())
    index = draw(st.integers(0, len(rows) - 1))
    field, value = draw(st.sampled_from(_malformed(reader)))
    return reader, rows, index, field, value


@POLICY
@given(malformed_files(), st.booleans())
def test_malformed_values_are_refused_naming_file_and_line(case: tuple, bom: bool) -> None:
    reader, rows, index, field, value = case
    rows[index] = {**rows[index], field: value}
    with tempfile.TemporaryDirectory() as scratch:
        path = write(reader, rows, Path(scratch), bom=bom)
        with pytest.raises(DataFormatError) as caught:
            reader.read(path, Path(scratch))
        assert f"{path}:{line_of(reader, index)}:" in str(caught.value), (field, value, str(caught.value))


@POLICY
@given(st.sampled_from(["qrels", "run"]), records(), st.sampled_from([" ", "\t", "  "]))
def test_padding_in_whitespace_separated_files_is_no_part_of_an_id(name: str, rows: list[dict], pad: str) -> None:
    reader = READERS[name]
    padded = [{**row, "did": f"{pad}{row['did']}{pad}"} for row in rows]
    with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as other:
        expected = reader.read(write(reader, rows, Path(plain)), Path(plain))
        assert reader.read(write(reader, padded, Path(other)), Path(other)) == expected


# ------------------------------------------------------------------------------------------ whole documents


@pytest.mark.parametrize("crlf", [False, True])
def test_documents_read_whole_skip_a_byte_order_mark(tmp_path: Path, crlf: bool) -> None:
    """The clusters folder's settings.json and a JSON or YAML --config file: a BOM and CRLF change nothing (a JSON file
    with a BOM was "corrupt or truncated" before)."""
    from dataclasses import dataclass as plain_dataclass

    from st_tasb.cli.options import load_config, option
    from st_tasb.prepare.clusters import SETTINGS_FILE, QueryClusters

    newline = "\r\n" if crlf else "\n"
    folder = QueryClusters.from_assignments(["q1", "q2"], [0, 1], {"k": 2}).save(tmp_path / "clusters")
    settings_path = folder / SETTINGS_FILE
    settings_path.write_bytes((BOM + settings_path.read_text().replace("\n", newline)).encode())
    assert QueryClusters.load(folder).settings["k"] == 2

    @plain_dataclass
    class Options:
        rate: float = option(0.1, help="learning rate")
        steps: int = option(1, help="steps")

    for name, text in (("config.json", '{"rate": 0.5,\n "steps": 3}\n'), ("config.yaml", "rate: 0.5\nsteps: 3\n")):
        path = tmp_path / name
        path.write_bytes((BOM + text.replace("\n", newline)).encode())
        assert load_config(path, Options) == {"rate": 0.5, "steps": 3}, name


@pytest.mark.parametrize("name", ["config.json", "config.yaml"])
def test_a_config_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path, name: str) -> None:
    """A byte that is not UTF-8 in a --config file is named with file:line (a bare UnicodeDecodeError before)."""
    from st_tasb.cli.options import ConfigError, load_config

    path = tmp_path / name
    path.write_bytes(b"# settings\nrate: 0.5\nnote: caf\xe9\n" if name.endswith("yaml") else b'{"rate": 0.5,\n"n": "caf\xe9"}\n')
    with pytest.raises((ConfigError, DataFormatError), match=rf"{name}:[23]: not valid UTF-8"):
        load_config(path, type("Options", (), {}))


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_byte_that_is_not_utf8_is_named_with_its_line(name: str, tmp_path: Path) -> None:
    """Every line reader names the line of a byte that is not UTF-8 (the teacher TSV named no line before)."""
    reader = READERS[name]
    rows = [{"qid": f"q{i}", "did": f"d{i}", "neg": f"n{i}", "grade": 1, "rank": i + 1, "score": 1.5, "text": "x"}
            for i in range(3)]
    path = write(reader, rows, tmp_path)
    lines = path.read_bytes().split(b"\n")
    index = line_of(reader, 1) - 1
    lines[index] += b"\xe9"  # a Latin-1 byte at the end of the line
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFormatError, match=rf"{path.name}:{index + 1}: not valid UTF-8"):
        reader.read(path, tmp_path)
