"""Tests of st_tasb.prepare.table: teacher-scored pairs from the MS MARCO TSV layout, the Hub layout and arrays.

Real rows: the MS MARCO toy triples and SciFact's training qrels, scored with BM25 (bm25s), so no
score below is invented.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import bm25s
import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, load_from_disk

from st_tasb.data.beir import DataFormatError, load_beir
from st_tasb.data.texts import TextStore, UnknownIdError
from st_tasb.prepare import table as table_module
from st_tasb.prepare.table import TeacherScoreTable

# ---------------------------------------------------------------------- helpers and fixtures


def _bm25(passages: list[str]) -> bm25s.BM25:
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, show_progress=False), show_progress=False)
    return retriever


def _bm25_scores(retriever: bm25s.BM25, query: str) -> np.ndarray:
    """BM25 score of ``query`` against every indexed passage (float32)."""
    tokens = bm25s.tokenize([query], return_ids=False, show_progress=False)[0]
    return retriever.get_scores(tokens)


def _write_tsv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("".join("\t".join(str(field) for field in row) + "\n" for row in rows), encoding="utf-8")
    return path


class ToyTriples:
    """The MS MARCO toy triples with integer ids (by first appearance) and BM25 teacher scores."""

    def __init__(self, triples_path: Path) -> None:
        triples = [line.rstrip("\n").split("\t") for line in triples_path.read_text(encoding="utf-8").splitlines()]
        query_texts = list(dict.fromkeys(q for q, _, _ in triples))
        passage_texts = list(dict.fromkeys(p for _, pos, neg in triples for p in (pos, neg)))
        query_id = {text: 1000 + i for i, text in enumerate(query_texts)}
        passage_id = {text: 7000 + i for i, text in enumerate(passage_texts)}
        retriever = _bm25(passage_texts)
        self.rows = []  # (pos_score, neg_score, qid, pos_pid, neg_pid), one per triple, in file order
        for query, pos, neg in triples:
            scores = _bm25_scores(retriever, query)
            self.rows.append(
                (
                    float(scores[passage_texts.index(pos)]),
                    float(scores[passage_texts.index(neg)]),
                    query_id[query],
                    passage_id[pos],
                    passage_id[neg],
                )
            )
        self.queries = TextStore.from_records([(query_id[t], t) for t in query_texts], name="queries")
        self.corpus = TextStore.from_records([(passage_id[t], t) for t in passage_texts], name="corpus")

    def column(self, index: int) -> np.ndarray:
        return np.array([row[index] for row in self.rows])


@pytest.fixture(scope="module")
def toy(msmarco_toy: Path) -> ToyTriples:
    return ToyTriples(msmarco_toy)


@pytest.fixture
def toy_tsv(toy: ToyTriples, tmp_path: Path) -> Path:
    return _write_tsv(tmp_path / "toy_scores_ids.tsv", toy.rows)


def _read(path: Path, tmp_path: Path) -> TeacherScoreTable:
    return TeacherScoreTable.from_tsv(path, cache_dir=tmp_path / "cache", show_progress_bar=False)


def _columns(table: TeacherScoreTable) -> dict[str, list]:
    return table.dataset.data.table.to_pydict()


# ---------------------------------------------------------------------- from_tsv on real rows


def test_from_tsv_reads_toy_triples_with_bm25_scores(toy: ToyTriples, toy_tsv: Path, tmp_path: Path) -> None:
    """Guards against misassigned columns, lost precision or reordered rows when reading the original layout."""
    table = _read(toy_tsv, tmp_path)

    assert len(table) == 100
    assert table.source == str(toy_tsv)
    assert table.num_queries == len(set(toy.column(2).tolist()))
    schema = table.dataset.data.schema
    assert [schema.field(c).type for c in ("query_id", "positive_id", "negative_id")] == [pa.int64()] * 3
    assert [schema.field(c).type for c in ("margin", "pos_score", "neg_score")] == [pa.float32()] * 3
    columns = _columns(table)
    assert columns["query_id"] == toy.column(2).tolist()
    assert columns["positive_id"] == toy.column(3).tolist()
    assert columns["negative_id"] == toy.column(4).tolist()
    pos, neg = toy.column(0).astype(np.float32), toy.column(1).astype(np.float32)
    np.testing.assert_array_equal(np.array(columns["pos_score"], dtype=np.float32), pos)
    np.testing.assert_array_equal(np.array(columns["neg_score"], dtype=np.float32), neg)
    np.testing.assert_array_equal(np.array(columns["margin"], dtype=np.float32), pos - neg)
    assert (pos > neg).mean() > 0.5, "BM25 should prefer most real positives; the scores look scrambled"
    table.validate(toy.queries, toy.corpus)


def test_from_tsv_is_memory_mapped_and_cached(toy_tsv: Path, tmp_path: Path, monkeypatch) -> None:
    """Guards against holding MS MARCO-size tables in memory, re-parsing an unchanged file, or serving a stale cache,
    also after an edit in place that keeps the file's size and modification time."""
    cache = tmp_path / "cache"
    first = _read(toy_tsv, tmp_path)
    (cached_file,) = [f["filename"] for f in first.dataset.cache_files]
    assert Path(cached_file).parent == cache

    def no_parsing(*args, **kwargs):
        raise AssertionError("an unchanged file was parsed again")

    with monkeypatch.context() as patch:
        patch.setattr(table_module, "_tsv_to_arrow", no_parsing)
        again = _read(toy_tsv, tmp_path)
    assert [f["filename"] for f in again.dataset.cache_files] == [cached_file]

    lines = toy_tsv.read_text().splitlines(keepends=True)
    toy_tsv.write_text("".join(lines[:10]))
    changed = _read(toy_tsv, tmp_path)
    assert len(changed) == 10

    # edited in place with the same size and modification time (rsync -t, touch -r): parsed again, not stale
    status = toy_tsv.stat()
    first_line = lines[0].split("\t")
    edited = "\t".join([first_line[1], first_line[0], *first_line[2:]])  # scores swapped: same length
    toy_tsv.write_text("".join([edited, *lines[1:10]]))
    os.utime(toy_tsv, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert toy_tsv.stat().st_size == status.st_size and toy_tsv.stat().st_mtime_ns == status.st_mtime_ns
    assert _read(toy_tsv, tmp_path).dataset["margin"][0] == -changed.dataset["margin"][0]


def test_from_tsv_default_cache_is_inside_the_datasets_cache(toy_tsv: Path, tmp_path: Path, monkeypatch) -> None:
    """Guards against writing the Arrow cache somewhere other than the datasets cache when no cache_dir is given."""
    monkeypatch.setattr(table_module.datasets_config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    table = TeacherScoreTable.from_tsv(toy_tsv, show_progress_bar=False)
    (cached_file,) = [Path(f["filename"]) for f in table.dataset.cache_files]
    assert cached_file.is_relative_to(tmp_path / "hf-datasets")


def test_from_tsv_string_ids_after_the_sniffed_lines(toy: ToyTriples, tmp_path: Path) -> None:
    """Guards against failing (or mangling ids) when a non-integer id first appears deep in the file."""
    rows = [toy.rows[i % len(toy.rows)] for i in range(1200)]
    late = (2.5, 1.0, "q-late", rows[0][3], rows[0][4])
    path = _write_tsv(tmp_path / "mixed.tsv", [*rows, late])

    table = _read(path, tmp_path)

    schema = table.dataset.data.schema
    assert schema.field("query_id").type == pa.string()
    assert schema.field("positive_id").type == pa.int64(), "passage ids are all integers and should stay int64"
    columns = _columns(table)
    assert columns["query_id"][:1200] == [str(row[2]) for row in rows]
    assert columns["query_id"][-1] == "q-late"
    assert columns["margin"][-1] == 1.5


# ---------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("lines", "bad_line", "phrase"),
    [
        (["1.5\t0.5\t1\t2\t3", "2.0\t1.0\t1\t2\t4", "0.5\t1.0\t1\t2"], 3, "expected 5 tab-separated fields"),
        (["1.5\t0.5\t1\t2\t3", "high\t1.0\t1\t2\t4"], 2, "pos_score 'high' is not a number"),
        (["1.5\t0.5\t1\t2\t3", "1.5\t0.5\t1\t2\t3", "1.5\t0.5\t1\t2\t3", "1.0\tnan\t1\t2\t4"], 4, "neg_score 'nan'"),
        (["1.5\t0.5\t1\t2\t3", "1.0\t-inf\t1\t2\t4"], 2, "not finite"),
        (["1.5\t0.5\t1\t2\t3", "1.5\t0.5\t1\t2\t3", "1e39\t0.5\t1\t2\t4"], 3, "'1e39' is not finite (as float32)"),
        (["3e38\t-3e38\t1\t2\t3"], 1, "pos_score - neg_score overflows float32"),
        (["1.5\t0.5\t1\t2\t3", "1.0\t0.5\t\t2\t4"], 2, "query_id is empty"),
        (["1.5\t0.5\tq1\td2\td3", "1.0\t0.5\tq1\td2\t"], 2, "negative_id is empty"),
        (["1.5\t0.5\t1\t2\t3", "", "1.0\t0.5\t1\t2\t4"], 2, "an empty line"),
        (["1.5\t0.5\t1\t2\t3", "1.0\t0.5\t1\t2\t4\t9"], 2, "found 6 field(s)"),
    ],
)
def test_malformed_line_is_reported_with_file_and_line(lines, bad_line, phrase, tmp_path: Path) -> None:
    """Guards against malformed rows being dropped silently or reported without the exact file:line."""
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as error:
        _read(path, tmp_path)
    message = str(error.value)
    assert f"{path}:{bad_line}: " in message
    assert phrase in message
    assert "1 malformed line(s)" in message
    assert not list((tmp_path / "cache").glob("*")), "a failed read must leave no (partial) cache file"


def test_a_negative_that_is_its_own_positive_is_refused_everywhere(tmp_path: Path) -> None:
    """Guards against rows whose negative is their positive: from_tsv names file:line (also when the Arrow cache is
    reused), training refuses a table built in memory naming the row, and scoring refuses such candidates."""
    from st_tasb.prepare.scoring import score_candidates
    from st_tasb.teachers import PrecomputedTeacher
    from st_tasb.training.dataset import build_training_dataset

    path = tmp_path / "scores.tsv"
    path.write_text("9.5\t2.5\t1\t10\t11\n3.0\t3.0\t1\t10\t10\n4.0\t1.0\t2\t20\t21\n")
    for attempt in range(2):  # the second call reopens the cached Arrow file
        with pytest.raises(DataFormatError, match=rf"{path}:2: the negative 10 is the positive of the same row \(1 such"):
            _read(path, tmp_path)
    table = TeacherScoreTable.from_margins(["q1", "q2"], ["d1", "d2"], ["d2", "d2"], [1.0, 0.0])
    stores = (TextStore.from_records([("q1", "a"), ("q2", "b")]), TextStore.from_records([("d1", "x"), ("d2", "y")]))
    with pytest.raises(DataFormatError, match="row 1: the negative 'd2' is the positive"):
        build_training_dataset(table, *stores)
    pairs = Dataset.from_dict({"query_id": ["q1", "q2"], "positive_id": ["d1", "d2"], "negative_id": ["d2", "d2"]})
    with pytest.raises(ValueError, match="pairs row 1: the negative 'd2' is the positive of the same row"):
        score_candidates(PrecomputedTeacher([0], [0], [1.0]), pairs, *stores, tmp_path / "shards")


def test_empty_file_is_reported(tmp_path: Path) -> None:
    """Guards against an empty teacher file giving an empty table instead of an error naming the file."""
    path = tmp_path / "empty.tsv"
    path.write_text("")
    with pytest.raises(DataFormatError, match="the file is empty") as error:
        _read(path, tmp_path)
    assert f"{path}:1: " in str(error.value)


def test_many_malformed_lines_are_counted_and_a_few_shown(tmp_path: Path) -> None:
    """Guards against reporting only the first bad line (or flooding the message) when many lines are bad."""
    lines = ["1.0\t0.5\t1\t2\t3"] * 20
    bad = [3, 5, 8, 9, 12, 15, 17, 20]
    for number in bad:
        lines[number - 1] = "1.0\tx\t1\t2\t3"
    path = tmp_path / "many.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as error:
        _read(path, tmp_path)
    message = str(error.value)
    assert f"{len(bad)} malformed line(s)" in message
    for number in bad[:5]:
        assert f"{path}:{number}: " in message
    for number in bad[5:]:
        assert f"{path}:{number}: " not in message


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    """Guards against a confusing pyarrow error for a path that does not exist."""
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        _read(tmp_path / "nowhere.tsv", tmp_path)


# ---------------------------------------------------------------------- SciFact, from arrays


@pytest.fixture(scope="module")
def scifact_pairs(scifact_dir: Path):
    """Pairs for 40 SciFact training claims: each judged abstract against its 3 best unjudged BM25 abstracts."""
    data = load_beir(scifact_dir, split="train")
    corpus_ids = data.corpus.ids.to_pylist()
    retriever = _bm25(data.corpus.texts(np.arange(len(data.corpus))))
    rows = []
    for query_id in sorted(data.qrels)[:40]:
        scores = _bm25_scores(retriever, data.queries[query_id])
        ranked = np.argsort(-scores)
        negatives = [int(i) for i in ranked if corpus_ids[i] not in data.qrels[query_id]][:3]
        for positive in data.qrels[query_id]:
            pos_score = scores[data.corpus.positions([positive])[0]]
            rows += [(query_id, positive, corpus_ids[n], pos_score, scores[n]) for n in negatives]
    return data, rows


def test_scifact_table_from_qrels_positives_and_bm25_negatives(scifact_pairs) -> None:
    """Guards against string ids being coerced, rows being lost, or statistics computed over the wrong groups."""
    data, rows = scifact_pairs
    query_ids, positive_ids, negative_ids, pos_scores, neg_scores = (list(column) for column in zip(*rows))

    table = TeacherScoreTable.from_scores(query_ids, positive_ids, negative_ids, pos_scores, neg_scores)

    assert len(table) == len(rows)
    schema = table.dataset.data.schema
    assert [schema.field(c).type for c in ("query_id", "positive_id", "negative_id")] == [pa.string()] * 3
    assert _columns(table)["negative_id"] == negative_ids
    table.validate(data.queries, data.corpus)
    per_query = np.array(list(Counter(query_ids).values()))
    margins = np.float32(pos_scores) - np.float32(neg_scores)
    stats = table.stats()
    assert (stats.rows, stats.queries) == (len(rows), 40) == (len(table), table.num_queries)
    assert (stats.pairs_per_query_min, stats.pairs_per_query_median, stats.pairs_per_query_max) == (
        per_query.min(),
        np.median(per_query),
        per_query.max(),
    )
    assert (stats.margin_min, stats.margin_max) == (margins.min(), margins.max())
    assert stats.margin_mean == pytest.approx(float(np.mean(margins.astype(np.float64))), rel=1e-6)
    assert f"{len(rows):,} pairs over 40 queries" in str(stats)


def test_margins_equal_pos_minus_neg_exactly() -> None:
    """Guards against margins computed in another precision than the stored float32 scores."""
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(5, 3, 1000), rng.normal(2, 3, 1000)  # float64 inputs
    table = TeacherScoreTable.from_scores(np.arange(1000) // 10, np.arange(1000), np.arange(1000) + 5000, pos, neg)
    columns = _columns(table)
    stored_pos = np.array(columns["pos_score"], dtype=np.float32)
    stored_neg = np.array(columns["neg_score"], dtype=np.float32)
    np.testing.assert_array_equal(stored_pos, pos.astype(np.float32))
    np.testing.assert_array_equal(np.array(columns["margin"], dtype=np.float32), stored_pos - stored_neg)


def test_from_margins_and_array_errors() -> None:
    """Guards against arrays of different lengths, missing ids or NaN scores entering a table unnoticed."""
    table = TeacherScoreTable.from_margins(np.array([3, 3]), np.array([1, 1]), np.array([2, 4]), np.array([0.5, -2.0]))
    assert not table.has_scores
    assert _columns(table) == {"query_id": [3, 3], "positive_id": [1, 1], "negative_id": [2, 4], "margin": [0.5, -2.0]}

    with pytest.raises(ValueError, match="lengths differ"):
        TeacherScoreTable.from_margins([1, 2], [1, 2], [3, 4], [0.5])
    expected = r"1 invalid row\(s\) in the arrays, e.g. row 2: pos_score is empty or not finite, margin is empty"
    with pytest.raises(ValueError, match=expected):
        TeacherScoreTable.from_scores([1, 1, 1], [2, 2, 2], [3, 4, 5], [1.0, 2.0, float("nan")], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="row 1: positive_id is empty"):
        TeacherScoreTable.from_margins(["a", "a"], ["p", None], ["n", "m"], [1.0, 2.0])
    with pytest.raises(ValueError, match="row 0: query_id is empty"):
        TeacherScoreTable.from_margins(["", "a"], ["p", "p"], ["n", "m"], [1.0, 2.0])
    with pytest.raises(ValueError, match="must hold integers or strings"):
        TeacherScoreTable.from_margins([1.5], [1], [2], [1.0])


# ---------------------------------------------------------------------- from_dataset (Hub layout)


def test_hub_style_dataset_with_score_column(toy: ToyTriples, tmp_path: Path) -> None:
    """Guards against misreading the Hub 'bert-ensemble-margin-mse' layout, or copying a memory-mapped one to RAM."""
    margins = toy.column(0) - toy.column(1)  # float64 margins, as on the Hub
    hub = Dataset.from_dict(
        {
            "query_id": toy.column(2),
            "positive_id": toy.column(3),
            "negative_id": toy.column(4),
            "score": margins,
        }
    )
    hub.save_to_disk(str(tmp_path / "hub"))
    hub = load_from_disk(str(tmp_path / "hub"))

    table = TeacherScoreTable.from_dataset(hub)

    assert table.dataset.column_names == ["query_id", "positive_id", "negative_id", "margin"]
    assert table.dataset.cache_files == hub.cache_files, "the table should stay memory-mapped on the Hub files"
    np.testing.assert_array_equal(np.array(table.dataset["margin"][:], dtype=np.float32), margins.astype(np.float32))
    assert _columns(table)["query_id"] == toy.column(2).tolist()
    assert table.dataset.data.schema.field("query_id").type == pa.int64()
    table.validate(toy.queries, toy.corpus)


def test_from_dataset_with_scores_and_a_margin(toy: ToyTriples) -> None:
    """Guards against ignoring a margin column that contradicts the scores it came with."""
    columns = {
        "query_id": toy.column(2),
        "positive_id": toy.column(3),
        "negative_id": toy.column(4),
        "pos_score": toy.column(0),
        "neg_score": toy.column(1),
    }
    from_scores = TeacherScoreTable.from_dataset(Dataset.from_dict(columns))
    expected = toy.column(0).astype(np.float32) - toy.column(1).astype(np.float32)
    np.testing.assert_array_equal(np.array(from_scores.dataset["margin"][:], dtype=np.float32), expected)

    consistent = TeacherScoreTable.from_dataset(Dataset.from_dict({**columns, "margin": toy.column(0) - toy.column(1)}))
    assert _columns(consistent) == _columns(from_scores)

    wrong = toy.column(0) - toy.column(1)
    wrong[17] += 1.0
    with pytest.raises(ValueError, match=r"'margin' disagrees with pos_score - neg_score in 1 row\(s\), e.g. row 17"):
        TeacherScoreTable.from_dataset(Dataset.from_dict({**columns, "margin": wrong}))


def test_from_dataset_names_found_and_needed_columns() -> None:
    """Guards against an unhelpful KeyError when a dataset lacks the teacher columns."""
    dataset = Dataset.from_dict({"query_id": [1], "positive_id": [2], "negative_id": [3], "label": [0.5]})
    with pytest.raises(ValueError) as error:
        TeacherScoreTable.from_dataset(dataset)
    message = str(error.value)
    assert "['query_id', 'positive_id', 'negative_id', 'label']" in message
    assert "'margin' or 'score'" in message and "['pos_score', 'neg_score']" in message


def test_constructor_rejects_wrong_column_types() -> None:
    """Guards against a table whose margins are not float32 (the contract other modules rely on)."""
    dataset = Dataset.from_dict({"query_id": [1], "positive_id": [2], "negative_id": [3], "margin": [0.5]})
    with pytest.raises(ValueError, match="'margin' must be float32, not double"):
        TeacherScoreTable(dataset)


# ---------------------------------------------------------------------- persistence and round trips


def test_save_load_round_trip(toy_tsv: Path, tmp_path: Path) -> None:
    """Guards against values, types or the source file changing across save/load, or load reading into RAM."""
    table = _read(toy_tsv, tmp_path)
    table.save(tmp_path / "saved")

    loaded = TeacherScoreTable.load(tmp_path / "saved")

    assert loaded.dataset.data.table.equals(table.dataset.data.table)
    assert loaded.dataset.data.schema == table.dataset.data.schema
    assert loaded.source == table.source == str(toy_tsv)
    assert loaded.dataset.cache_files
    assert all(Path(f["filename"]).is_relative_to(tmp_path / "saved") for f in loaded.dataset.cache_files)

    with pytest.raises(FileNotFoundError, match="not a saved teacher score table"):
        TeacherScoreTable.load(tmp_path / "cache")


@pytest.mark.parametrize("string_ids", [False, True])
def test_to_tsv_from_tsv_round_trip(string_ids: bool, tmp_path: Path) -> None:
    """Guards against scores losing precision (or ids their type) when written to and read from the TSV layout."""
    rng = np.random.default_rng(3)
    n = 500
    scores = np.concatenate([rng.normal(0, 10, n - 4), [1e-7, -3.4e38, 3.4e38, 0.0]]).astype(np.float32)
    ids = [rng.integers(0, 50, n), rng.integers(0, 9000, n), rng.integers(0, 9000, n)]
    if string_ids:
        ids = [np.char.add("id-", values.astype(str)) for values in ids]
    table = TeacherScoreTable.from_scores(*ids, scores, np.float32(0.0) * scores)

    table.to_tsv(tmp_path / "out.tsv")
    again = _read(tmp_path / "out.tsv", tmp_path)

    assert again.dataset.data.table.equals(table.dataset.data.table)
    assert again.dataset.data.schema == table.dataset.data.schema


def test_to_tsv_needs_scores(tmp_path: Path) -> None:
    """Guards against writing a TSV with invented pos/neg scores for a margins-only table."""
    with pytest.raises(ValueError, match="margins only"):
        TeacherScoreTable.from_margins([1], [2], [3], [0.5]).to_tsv(tmp_path / "x.tsv")


# ---------------------------------------------------------------------- validation against texts


def test_validate_names_missing_ids_with_file_and_line(toy: ToyTriples, toy_tsv: Path, tmp_path: Path) -> None:
    """Guards against unknown ids surfacing late (mid-training) or without saying where they are."""
    table = _read(toy_tsv, tmp_path)
    dropped_passage = toy.rows[4][4]  # the negative of line 5
    dropped_query = toy.rows[0][2]
    corpus = TextStore.from_records(
        [(i, t) for i, t in zip(toy.corpus.ids.to_pylist(), toy.corpus.dataset["text"]) if i != dropped_passage],
        name="corpus",
    )
    queries = TextStore.from_records(
        [(i, t) for i, t in zip(toy.queries.ids.to_pylist(), toy.queries.dataset["text"]) if i != dropped_query],
        name="queries",
    )
    negative_lines = [n for n, row in enumerate(toy.rows, start=1) if row[4] == dropped_passage]
    positive_lines = [n for n, row in enumerate(toy.rows, start=1) if row[3] == dropped_passage]
    query_lines = [n for n, row in enumerate(toy.rows, start=1) if row[2] == dropped_query]
    bad_lines = set(negative_lines) | set(positive_lines) | set(query_lines)

    with pytest.raises(UnknownIdError) as error:
        table.validate(queries, corpus)

    message = str(error.value)
    assert message.startswith(f"{len(bad_lines)} of 100 rows name ids that are missing")
    assert f"{len(query_lines)} query_id(s) not in queries, e.g. {dropped_query} ({toy_tsv}:1)" in message
    first_negative = f"{dropped_passage} ({toy_tsv}:{negative_lines[0]})"
    assert f"{len(negative_lines)} negative_id(s) not in corpus, e.g. {first_negative}" in message
    table.validate(toy.queries, toy.corpus)


def test_hard_margin_counts_pairs_and_queries_by_hand() -> None:
    """Guards drop_small_margins against a hand count: margins below the threshold go, the threshold itself
    stays; query 1 loses 2 of 3 pairs, query 2 all of its 2 (it leaves training, and is named), query 3 none."""
    table = TeacherScoreTable.from_margins(
        [1, 1, 1, 2, 2, 3], [10, 10, 11, 20, 20, 30], [12, 13, 14, 21, 22, 31], [-0.5, 0.99, 1.0, 0.2, -3.0, 4.0]
    )
    kept, report = table.drop_small_margins(1.0)
    assert kept.dataset["query_id"][:] == [1, 3] and kept.dataset["margin"][:] == [1.0, 4.0]
    assert (report.pairs_before, report.pairs_removed, report.queries_before) == (6, 4, 3)
    assert (report.queries_touched, report.queries_emptied, report.emptied_examples) == (2, 1, (2,))
    assert "removed 4 of 6 pairs (66.7%), from 2 of 3 queries; 1 queries lost every pair" in str(report)
    unchanged, none = table.drop_small_margins(-5.0)
    assert len(unchanged) == 6 and none.pairs_removed == 0 and "lost every pair" not in str(none)


@pytest.mark.parametrize(("threshold", "message"), [
    (4.5, r"min_margin=4.5 removes every pair of the table \(its largest margin is 4\)"),
    (float("nan"), "min_margin must be a finite number"),
    ("1", "min_margin must be a number"),
])
def test_hard_margin_refuses_a_threshold_that_empties_the_table_or_is_no_number(threshold, message: str) -> None:
    """Guards bad thresholds: one above every margin, NaN and a string each say what is wrong."""
    table = TeacherScoreTable.from_margins([1, 2], [10, 20], [11, 21], [1.0, 4.0])
    with pytest.raises(ValueError, match=message):
        table.drop_small_margins(threshold)
