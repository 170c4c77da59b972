"""Pseudo-queries from a bare corpus: real SciFact rows, the split of each document, bad input, mining with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from st_tasb.cli import main
from st_tasb.data.beir import BeirData, DataFormatError, load_beir
from st_tasb.prepare.mining import mine_candidates
from st_tasb.prepare.pseudo_queries import make_pseudo_queries


@pytest.fixture(scope="module")
def scifact_rows(scifact_dir: Path) -> list[dict]:
    """The first 200 real SciFact abstracts."""
    with (scifact_dir / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(200)]


def write_corpus(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_title_queries_on_real_rows(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards the title mode: one query per abstract (its title), the positive is the text without the title,
    the original documents stay unchanged ahead of the positives, and each source document is excluded."""
    pseudo = make_pseudo_queries(write_corpus(tmp_path, scifact_rows), source="title")
    assert len(pseudo.queries) == 200 and len(pseudo.corpus) == 400
    for row in scifact_rows[:50]:
        qid = "pseudo:" + row["_id"]
        assert pseudo.queries[qid] == row["title"].strip()
        assert pseudo.corpus[qid] == row["text"].strip()
        assert pseudo.corpus[row["_id"]] == f"{row['title'].strip()} {row['text'].strip()}"
        assert pseudo.qrels[qid] == {qid: 1} and pseudo.exclude[qid] == [row["_id"]]
    assert pseudo.corpus.ids.to_pylist()[:200] == [r["_id"] for r in scifact_rows]


def test_first_sentence_queries_on_real_rows(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards the first-sentence mode: query + positive give back the whole document, and the query is a
    prefix of the text that the positive does not start with."""
    pseudo = make_pseudo_queries(write_corpus(tmp_path, scifact_rows), source="first-sentence", skip_unusable=True)
    assert len(pseudo.queries) + len(pseudo.skipped) == 200 and len(pseudo.queries) > 190
    for row in scifact_rows[:50]:
        qid = "pseudo:" + row["_id"]
        if qid not in pseudo.qrels:
            continue
        query, positive, title = pseudo.queries[qid], pseudo.corpus[qid], row["title"].strip()
        assert row["text"].startswith(query) and query.endswith((".", "!", "?"))
        assert positive.startswith(title) and query not in positive
        assert " ".join((title + " " + query + positive[len(title):]).split()) == " ".join((title + " " + row["text"]).split())


def test_empty_titles_are_named_with_file_and_line(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards bad input: an empty title stops with file:line (or is skipped and listed when asked)."""
    rows = [dict(row) for row in scifact_rows[:5]]
    rows[3]["title"] = "  "
    path = write_corpus(tmp_path, rows)
    with pytest.raises(DataFormatError, match=rf"{path}:4: document '{rows[3]['_id']}' has an empty title"):
        make_pseudo_queries(path)
    skipped = make_pseudo_queries(path, skip_unusable=True)
    assert skipped.skipped == [f"{path}:4"] and len(skipped.queries) == 4 and len(skipped.corpus) == 9


def test_duplicate_ids_name_both_lines(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards bad input: a repeated document id names its line and the line of its first use."""
    rows = scifact_rows[:6] + [scifact_rows[2]]
    path = write_corpus(tmp_path, rows)
    with pytest.raises(DataFormatError, match=rf"{path}:7: id '{rows[2]['_id']}' repeats the record of line 3"):
        make_pseudo_queries(path)


def test_bad_settings_and_prefix_clashes(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards the remaining errors: an unknown source, an empty prefix, an id that already carries the prefix."""
    path = write_corpus(tmp_path, scifact_rows[:3])
    with pytest.raises(ValueError, match="source must be one of"):
        make_pseudo_queries(path, source="abstract")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix must not be empty"):
        make_pseudo_queries(path, prefix="")
    with pytest.raises(DataFormatError, match=":1: id .* starts with the pseudo-query prefix"):
        make_pseudo_queries(path, prefix=scifact_rows[0]["_id"][:2])


def test_mining_never_uses_the_source_document_as_a_negative(scifact_rows: list[dict], tmp_path: Path) -> None:
    """Guards the exclusion: BM25 ranks a title's own abstract first, yet it is never the pseudo-query's negative
    (it would be a false negative); without ``exclude`` it would be."""
    pseudo = make_pseudo_queries(write_corpus(tmp_path, scifact_rows[:100]), source="title")
    mined = mine_candidates(pseudo.data, top_k=10, exclude=pseudo.exclude, show_progress_bar=False)
    pairs = mined.pairs.to_pandas()
    assert set(pairs["query_id"]) == set(pseudo.qrels)
    assert (pairs["positive_id"] == pairs["query_id"]).all()
    assert not (("pseudo:" + pairs["negative_id"]) == pairs["query_id"]).any()
    unguarded = mine_candidates(pseudo.data, top_k=10, show_progress_bar=False).pairs.to_pandas()
    source_is_negative = ("pseudo:" + unguarded["negative_id"]) == unguarded["query_id"]
    assert unguarded[source_is_negative]["query_id"].nunique() > 0.8 * len(pseudo.qrels)


def test_judged_queries_join_without_near_copy_negatives(scifact_dir: Path, tmp_path: Path) -> None:
    """Guards with_judged: real claims keep their qrels, and the positive passage made from a claim's judged
    abstract is excluded from the claim's negatives."""
    data = load_beir(scifact_dir, "train")
    pseudo = make_pseudo_queries(scifact_dir / "corpus.jsonl")
    claims = dict(list(data.qrels.items())[:40])
    joint, exclude = pseudo.with_judged(BeirData(data.corpus, data.queries, claims))
    assert len(joint.queries) == len(data.queries) + len(pseudo.queries)
    for qid, docs in claims.items():
        assert joint.qrels[qid] == docs and exclude[qid] == ["pseudo:" + doc for doc in docs]
    with pytest.raises(ValueError, match="both the judged and the pseudo-queries"):
        pseudo.with_judged(BeirData(data.corpus, pseudo.queries, {"pseudo:" + data.corpus.ids[0].as_py(): {"x": 1}}))


def test_cli_mine_pseudo_queries_writes_the_texts_it_mined(scifact_rows: list[dict], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Guards `st-tasb mine --pseudo-queries` on a corpus without qrels: pairs over the pseudo-queries, and a
    BEIR folder with every text they name, which `st-tasb score --data` can read."""
    write_corpus(tmp_path / "corpus-only", scifact_rows[:60])
    out = tmp_path / "mined"
    assert main(["mine", "--data", str(tmp_path / "corpus-only"), "--pseudo-queries", "title", "--top-k", "5",
                 "--output", str(out)]) == 0
    assert "score with --data" in capsys.readouterr().out
    texts = load_beir(out / "texts", "train")
    pairs = __import__("pandas").read_parquet(out / "pairs.parquet")
    assert len(texts.queries) == 60 and len(texts.corpus) == 120 and len(pairs) > 0
    texts.queries.positions(pairs["query_id"].tolist())
    texts.corpus.positions(pairs["positive_id"].tolist() + pairs["negative_id"].tolist())
