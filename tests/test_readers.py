"""The policy of each reader for records that repeat or are incomplete: an error naming file:line wherever the
results would change (the README's table of reader policies)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from st_tasb.data.beir import DataFormatError, load_beir, load_qrels


def beir_folder(root: Path, corpus: list[dict], queries: list[dict] | None = None, qrels: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(record) + "\n" for record in corpus))
    queries = queries or [{"_id": "q1", "text": "why do cells divide"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(record) + "\n" for record in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels or "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


@pytest.mark.parametrize(("record", "message"), [
    ({"_id": "", "text": "no id"}, r"corpus\.jsonl:2: the '_id' is empty"),
    ({"_id": "  ", "text": "blank id"}, r"corpus\.jsonl:2: the '_id' is empty"),
    ({"_id": " d2", "text": "padded id"}, r"corpus\.jsonl:2: the '_id' ' d2' has surrounding whitespace"),
    ({"_id": "d1", "text": "another text"}, r"corpus\.jsonl:2: '_id' 'd1' again \(first at line 1\) with another text"),
])
def test_beir_records_with_empty_padded_or_conflicting_ids_are_named(record: dict, message: str, tmp_path: Path) -> None:
    """Guards the corpus and queries policy: an empty id (which would fail late, in evaluation, without naming the
    file), an id that qrels could never name (whitespace), and an id given twice with two texts are errors naming
    corpus.jsonl and the line, at load time."""
    folder = beir_folder(tmp_path / "data", [{"_id": "d1", "title": "Cells", "text": "Cells divide."}, record])
    with pytest.raises(DataFormatError, match=message):
        load_beir(folder)


def test_an_exact_repeat_is_kept_once_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Guards the other half of the policy: a record repeated exactly (same id and text) changes no result, so it is
    kept once, and a warning says how many repeats there were; the same holds for queries.jsonl."""
    record = {"_id": "d1", "title": "Cells", "text": "Cells divide."}
    query = {"_id": "q1", "text": "why do cells divide"}
    folder = beir_folder(tmp_path / "data", [record, record, {"_id": "d2", "text": "x"}, record], [query, query])
    with caplog.at_level(logging.WARNING):
        data = load_beir(folder)
    assert data.corpus.ids.to_pylist() == ["d1", "d2"] and len(data.queries) == 1
    assert "2 record(s) repeat an earlier one exactly" in caplog.text and "1 record(s)" in caplog.text


def test_qrels_judging_a_pair_twice_with_two_grades_is_named(tmp_path: Path) -> None:
    """Guards the qrels policy: the same (query, document) judged twice with two grades is an error naming the line
    (the later grade would silently win); repeated with the same grade it is kept once."""
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq1\td1\t1\n")
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 0}}
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n")
    with pytest.raises(DataFormatError, match=r"qrels\.tsv:3: query 'q1' judges document 'd1' again with another grade \(1, now 2\)"):
        load_qrels(path)


def test_candidates_without_rows_columns_or_ids_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards st-tasb score's reading of candidates: a Parquet file with no rows (a pyarrow traceback before), a
    missing column, or a null or empty id is one line naming the file (and the row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from st_tasb.cli import main

    data = beir_folder(tmp_path / "data", [{"_id": "d1", "text": "x"}, {"_id": "d2", "text": "y"}])
    cases = {
        "empty.parquet": (pa.table({"query_id": pa.array([], pa.string()), "positive_id": pa.array([], pa.string()),
                                    "negative_id": pa.array([], pa.string())}), "the candidates file has no rows"),
        "nulls.parquet": (pa.table({"query_id": ["q1", None], "positive_id": ["d1", "d1"], "negative_id": ["d2", "d2"]}),
                          "row 1 has no query_id (null or empty)"),
        "blank.parquet": (pa.table({"query_id": ["q1"], "positive_id": [""], "negative_id": ["d2"]}),
                          "row 0 has no positive_id"),
        "columns.parquet": (pa.table({"query_id": ["q1"], "positive_id": ["d1"]}), "['negative_id'] missing"),
    }
    for name, (table, message) in cases.items():
        pq.write_table(table, tmp_path / name)
        code = main(["score", "--candidates", str(tmp_path / name), "--data", str(data), "--split", "test",
                     "--teachers", "bi-encoder:m", "--output", str(tmp_path / f"out-{name}")])
        error = capsys.readouterr().err
        assert code == 2 and f"{tmp_path / name}: " in error and message in error, (name, error)


def test_a_saved_table_missing_its_files_or_unreadable_is_named(tmp_path: Path) -> None:
    """Guards TeacherScoreTable.load: a folder whose state.json is gone is named with what it lacks (not datasets'
    "neither a Dataset directory nor a DatasetDict directory"), and a file it cannot read for want of permission is
    said to be so, not "corrupt or truncated"."""
    import os

    from st_tasb.data.files import CorruptFileError, reading
    from st_tasb.prepare.table import TeacherScoreTable

    folder = tmp_path / "table"
    TeacherScoreTable.from_margins(["q1"], ["d1"], ["d2"], [1.0]).save(folder)
    (folder / "state.json").unlink()
    with pytest.raises(CorruptFileError, match=r"table: the saved teacher score table lacks state\.json"):
        TeacherScoreTable.load(folder)
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    with pytest.raises(PermissionError, match=r"locked\.json: cannot read this settings file: permission denied"):
        with reading(locked, "settings file"):
            raise PermissionError(13, "Permission denied", str(locked))
    assert os.access(locked, os.R_OK)  # the check above raised on our behalf; root reads every file


def test_teacher_ids_with_surrounding_whitespace_are_named(tmp_path: Path) -> None:
    """Guards the teacher tables' id policy, the same as the BEIR files': an id with surrounding whitespace matches
    no text (and a padded integer id turned the whole column into strings); the TSV names file:line, a table from a
    dataset (Hub layout) names the row when training builds its dataset."""
    from datasets import Dataset

    from st_tasb.prepare.table import TeacherScoreTable

    path = tmp_path / "scores.tsv"
    path.write_text("9.5\t2.5\t11\t0\t3\n1.0\t2.0\t 11\t0\t4\n")
    with pytest.raises(DataFormatError, match=r"scores\.tsv:2: query_id ' 11' has surrounding whitespace \(1 such"):
        TeacherScoreTable.from_tsv(path, cache_dir=tmp_path / "cache", show_progress_bar=False)
    hub = Dataset.from_dict({"query_id": ["q1", "q1"], "positive_id": ["d1", "d1"], "negative_id": ["d2", "d3\t"],
                             "score": [1.0, 2.0]})
    with pytest.raises(DataFormatError, match=r"row 1: negative_id 'd3\\t' has surrounding whitespace"):
        TeacherScoreTable.from_dataset(hub).check_ids()


def test_table_ids_missing_from_the_texts_are_named_with_their_line(tmp_path: Path) -> None:
    """Guards the policy for an id of one file missing from another: the table's rows that name a query or passage
    the BEIR folder lacks are counted and named with file:line before anything trains on them."""
    from st_tasb.data.texts import TextStore, UnknownIdError
    from st_tasb.prepare.table import TeacherScoreTable

    path = tmp_path / "scores.tsv"
    path.write_text("9.5\t2.5\tq1\td1\td2\n1.0\t2.0\tq1\td1\td9\n3.0\t1.0\tq7\td1\td2\n")
    table = TeacherScoreTable.from_tsv(path, cache_dir=tmp_path / "cache", show_progress_bar=False)
    queries = TextStore.from_records([("q1", "a question")], name="queries")
    corpus = TextStore.from_records([("d1", "one"), ("d2", "two")], name="corpus")
    with pytest.raises(UnknownIdError, match=r"2 of 3 rows .*1 query_id\(s\) not in queries, e\.g\. 'q7' \(.*scores"
                       r"\.tsv:3\); 1 negative_id\(s\) not in corpus, e\.g\. 'd9' \(.*scores\.tsv:2\)"):
        table.validate(queries, corpus)


def test_clusters_with_a_query_twice_or_a_query_missing_are_named(tmp_path: Path) -> None:
    """Guards the clusters folder's policy: a query listed twice (two clusters, or the same one) is refused naming
    the folder; a training query without a cluster is named when the training dataset is built."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from st_tasb.data.texts import TextStore
    from st_tasb.prepare.clusters import ASSIGNMENTS_FILE, QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable
    from st_tasb.training.dataset import build_training_dataset

    folder = QueryClusters.from_assignments(["q1", "q2"], [0, 1]).save(tmp_path / "clusters")
    pq.write_table(pa.table({"query_id": ["q1", "q2", "q1"], "cluster": [0, 1, 1]}), folder / ASSIGNMENTS_FILE)
    with pytest.raises(ValueError, match=r"clusters: .*repeated ids include \['q1'\]"):
        QueryClusters.load(folder)
    queries = TextStore.from_records([("q1", "a"), ("q3", "c")], name="queries")
    corpus = TextStore.from_records([("d1", "one"), ("d2", "two")], name="corpus")
    table = TeacherScoreTable.from_margins(["q1", "q3"], ["d1", "d1"], ["d2", "d2"], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"1 query\(ies\) of the table have no cluster, e\.g\. \['q3'\]"):
        build_training_dataset(table, queries, corpus, QueryClusters.from_assignments(["q1", "q2"], [0, 1]))


def test_qrels_fields_are_whitespace_separated(tmp_path: Path) -> None:
    """Guards the qrels policy: fields are separated by any whitespace (as trec_eval reads them), so padding is not
    part of an id, and an empty field is a missing field, named with file:line."""
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n q1 \td1\t1\n")
    assert load_qrels(path) == {"q1": {"d1": 1}}
    path.write_text("query-id\tcorpus-id\tscore\nq1\t\t1\n")
    with pytest.raises(DataFormatError, match=r"qrels\.tsv:2: expected 3 \(BEIR\) or 4 \(TREC\) fields, got 2"):
        load_qrels(path)
