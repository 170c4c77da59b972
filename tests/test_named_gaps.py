"""What evaluation ignores or zeroes is named, a run sharing no query with the qrels is refused, a second scoring job
on a work folder is refused naming the first, and the evaluate and score commands name what is wrong before the work
(issue 30, items 5 and 6 and its weak cases)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from st_tasb.cli import main
from st_tasb.data.beir import BeirData
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.metrics import evaluate_run


class HashEncoder:
    """A stand-in bi-encoder: one fixed random vector per distinct text (fast, exact)."""

    similarity_fn_name = "dot"
    model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *_, **__: None)  # what an evaluator records

    def encode_document(self, texts: list[str], normalize_embeddings: bool = False, **_: object) -> np.ndarray:
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts]).astype(np.float32)

    encode_query = encode_document


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def error_of(arguments: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run in-process; assert exit status 2 and a one-line error without a traceback; return the message."""
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"st-tasb {arguments[0]}: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def beir_folder(root: Path, qrels: str) -> Path:
    root.mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"passage number {i}"} for i in range(6)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    queries = [{"_id": f"q{i}", "text": f"question {i}"} for i in range(3)]
    (root / "queries.jsonl").write_text("".join(json.dumps(query) + "\n" for query in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


# ------------------------------------------------------------------------------------------ evaluation (item 5)


def test_a_run_sharing_no_query_with_the_qrels_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It scored 0.0 with exit status 0 (every qrels query counted as zero): now it is an error naming ids of both."""
    with pytest.raises(ValueError, match=r"no entries for any of the 1 qrels queries \(e\.g\. 'q1'\).*'x1', 'x2'"):
        evaluate_run({"x1": {"d1": 1.0}, "x2": {"d1": 1.0}}, {"q1": {"d1": 1}})
    with pytest.raises(ValueError, match="no entries for any"):
        evaluate_run({"q1": {}}, {"q1": {"d1": 1}})
    run, qrels = tmp_path / "run.trec", tmp_path / "qrels.tsv"
    run.write_text("x1 Q0 d1 1 1.0 t\n")
    qrels.write_text("q1\t0\td1\t1\n")
    message = error_of(["evaluate", "--run", str(run), "--qrels", str(qrels)], capsys)
    assert "no query to evaluate" in message and "'x1'" in message and "'q1'" in message


def test_queries_a_run_zeroes_or_ignores_are_counted_and_named(caplog: pytest.LogCaptureFixture) -> None:
    """A qrels query without run entries (counted as zero) and a run query without judgements (ignored) are warned
    about with their count and at most five ids."""
    qrels = {f"q{i}": {"d1": 1} for i in range(8)}
    run = {"q0": {"d1": 1.0}, "extra": {"d1": 1.0}}
    with caplog.at_level(logging.WARNING, logger="st_tasb"):
        evaluate_run(run, qrels)
    zeroed, ignored = warnings_of(caplog)
    assert zeroed.startswith("7 of the 8 qrels queries have no run entries and count as 0") and "'q1'" in zeroed
    assert "'q5'" in zeroed and "'q6'" not in zeroed  # five ids at most
    assert ignored == "1 run queries have no judgements and are ignored, e.g. 'extra'"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="st_tasb"):
        evaluate_run(run, qrels, missing_as_zero=False)
    assert "are left out of the means" in warnings_of(caplog)[0]


def test_judged_ids_missing_from_the_texts_are_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """evaluate_model and the Trainer's evaluator name the judged queries the queries lack and the judged documents
    the corpus lacks (both were scored without a word); the evaluator says it once, not at every evaluation."""
    from st_tasb.retrieval.evaluation import RetrievalEvaluator, evaluate_model

    corpus = TextStore.from_records([(f"d{i}", f"passage {i}") for i in range(10)], name="corpus")
    queries = TextStore.from_records([("q1", "first"), ("q2", "second")], name="queries")
    qrels = {"q1": {"d1": 1, "gone1": 1}, "q2": {"d2": 1, "gone2": 2}, "lost": {"d3": 1}}
    with caplog.at_level(logging.WARNING, logger="st_tasb"):
        evaluate_model(HashEncoder(), BeirData(corpus, queries, qrels), top_k=5, show_progress_bar=False)
    assert warnings_of(caplog) == [
        ("1 of the 3 judged queries are not in the queries, e.g. 'lost': they get no results and count as 0 on every "
         "metric"),
        ("2 of the 5 judged documents are not in the corpus, e.g. 'gone1', 'gone2': no run can retrieve them, so recall "
         "and nDCG cannot reach 1"),
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="st_tasb"):
        evaluator = RetrievalEvaluator(queries, corpus, qrels, name="dev", top_k=5)
        evaluator(HashEncoder())
        evaluator(HashEncoder())
    assert len(warnings_of(caplog)) == 2 and all(w.startswith("evaluator 'dev': ") for w in warnings_of(caplog))
    with pytest.raises(ValueError, match=r"none of the 1 judged queries is in the queries, e\.g\. 'lost'"):
        evaluate_model(HashEncoder(), BeirData(corpus, queries, {"lost": {"d1": 1}}), show_progress_bar=False)


def test_evaluate_names_the_gaps_in_its_output(tmp_path: Path, small_student_path: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """st-tasb evaluate --model warns (on stderr, through its logger) about a judged query and a judged document that
    the BEIR folder lacks, and still evaluates."""
    data = beir_folder(tmp_path / "data", "q0\td0\t1\nq1\td1\t1\nq1\tmissing-doc\t1\nmissing-query\td2\t1\n")
    with caplog.at_level(logging.WARNING, logger="st_tasb"):
        assert main(["evaluate", "--model", small_student_path, "--data", str(data), "--device", "cpu", "--json"]) == 0
    warnings = "\n".join(warnings_of(caplog))
    assert "1 of the 3 judged queries are not in the queries" in warnings and "'missing-query'" in warnings
    assert "1 of the 4 judged documents are not in the corpus" in warnings and "'missing-doc'" in warnings


# ------------------------------------------------------------------------------------------ evaluate before the work


@pytest.fixture
def no_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the retrieval runs: the checks under test must come before it."""
    import st_tasb.retrieval.evaluation

    def evaluated(*_: object, **__: object) -> None:
        raise AssertionError("the evaluation ran before the check")

    monkeypatch.setattr(st_tasb.retrieval.evaluation, "evaluate_model", evaluated)


def test_update_card_of_a_model_st_tasb_did_not_train_is_refused_first(
    tmp_path: Path, small_student_path: str, capsys: pytest.CaptureFixture, no_evaluation: None
) -> None:
    data = beir_folder(tmp_path / "data", "q0\td0\t1\n")
    message = error_of(["evaluate", "--model", small_student_path, "--data", str(data), "--update-card"], capsys)
    assert "tas_balanced.json" in message and "not written by st-tasb train" in message


def test_run_output_is_checked_before_the_retrieval(
    tmp_path: Path, small_student_path: str, capsys: pytest.CaptureFixture, no_evaluation: None
) -> None:
    """A --run-output under a file, or one that is a folder, is named (the user's path, not a temporary file) before
    any retrieval."""
    data = beir_folder(tmp_path / "data", "q0\td0\t1\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    common = ["evaluate", "--model", small_student_path, "--data", str(data), "--run-output"]
    message = error_of([*common, str(blocker / "run.trec")], capsys)
    assert f"--run-output {blocker / 'run.trec'}" in message and "is a file, not a folder" in message
    assert ".partial" not in message
    message = error_of([*common, str(tmp_path), "--overwrite"], capsys)
    assert f"--run-output {tmp_path} is a folder" in message


def test_a_model_folder_without_config_json_names_the_file(tmp_path: Path, small_student_path: str,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Not transformers' "Should have a `model_type` key in its config.json"."""
    model = tmp_path / "model"
    shutil.copytree(small_student_path, model)
    (model / "config.json").unlink()
    data = beir_folder(tmp_path / "data", "q0\td0\t1\n")
    message = error_of(["evaluate", "--model", str(model), "--data", str(data)], capsys)
    assert f"{model / 'config.json'} is missing" in message and "model_type" not in message


def test_candidates_without_rows_are_not_called_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = beir_folder(tmp_path / "data", "q0\td0\t1\n")
    empty = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({name: pa.array([], pa.string()) for name in ("query_id", "positive_id", "negative_id")}),
                   empty)
    message = error_of(["score", "--candidates", str(empty), "--data", str(data), "--split", "test", "--teachers",
                        "bi-encoder:m", "--output", str(tmp_path / "out")], capsys)
    assert "has no rows" in message and "corrupt" not in message


# ------------------------------------------------------------------------------------------ scoring lock (item 6)


class ZeroTeacher:
    name = "zero"

    def score_pairs(self, queries, corpus, query_positions, doc_positions) -> np.ndarray:
        return np.zeros(len(query_positions), dtype=np.float32)


def test_a_second_scoring_job_on_a_work_folder_is_refused_and_a_dead_ones_lock_taken_over(tmp_path: Path) -> None:
    """While a process holds the work folder, score_candidates refuses it, naming that process (pid, host, start
    time); once the process is killed (kill -9 leaves its lock behind), the lock is taken over and scoring runs."""
    from datasets import Dataset

    from st_tasb.data.files import LOCK_FILE, FolderInUseError
    from st_tasb.prepare.scoring import score_candidates

    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from st_tasb.data.files import locked\n"
        f"with locked({str(work)!r}, 'scoring work folder'):\n    print('held', flush=True); time.sleep(120)"
    )], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        queries = TextStore.from_records([("q1", "a question")])
        corpus = TextStore.from_records([("d1", "one"), ("d2", "two")])
        pairs = Dataset.from_dict({"query_id": ["q1"], "positive_id": ["d1"], "negative_id": ["d2"]})
        with pytest.raises(FolderInUseError, match=rf"scoring work folder {work}/ is in use by st-tasb process "
                                                   rf"{holder.pid} on .+ since 20\d\d-"):
            score_candidates(ZeroTeacher(), pairs, queries, corpus, work, show_progress_bar=False)
        assert not list(work.glob("shard-*"))
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert (work / LOCK_FILE).is_file()  # left behind by the killed process
        table = score_candidates(ZeroTeacher(), pairs, queries, corpus, work, show_progress_bar=False)
        assert len(table) == 1 and not (work / LOCK_FILE).exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
