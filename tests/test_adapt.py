"""`st-tasb adapt` on a small real SciFact folder: the starting model itself as student, a dev split of its own,
several teachers averaged, the corpus alone, and bad input named in one line with nothing of the user's replaced."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from st_tasb.cli import main
from st_tasb.data.beir import load_beir
from st_tasb.data.runs import read_trec_run
from st_tasb.retrieval.metrics import evaluate_run

FAST = ["--max-steps", "3", "--batch-size", "8", "--learning-rate", "1e-4"]


def _adapt(data: Path, output: Path, model: str, *extra: str) -> dict:
    assert main(["adapt", "--data", str(data), "--output", str(output), "--model", model, *FAST, *extra]) == 0
    return json.loads((output / "metrics.json").read_text())


@pytest.fixture(scope="module")
def starting_model(small_student_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 2-layer MiniLM cut as a cosine model without a Normalize module (as many Hub models are)."""
    model = SentenceTransformer(small_student_path, device="cpu")
    model.similarity_fn_name = "cosine"
    path = tmp_path_factory.mktemp("start") / "cosine-2l"
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def adapted(tiny_beir: Path, starting_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("adapt") / "out"
    _adapt(tiny_beir, output, starting_model, "--dev-split", "dev", "--pseudo-queries", "none")
    return output


def test_adapt_trains_the_starting_model_itself_and_evaluates_on_the_dev_split(
    adapted: Path, tiny_beir: Path, starting_model: str
) -> None:
    """Guards the default student (the starting model, same layers, same size) and --dev-split: the 12 queries of
    qrels/dev.tsv are evaluated, all 40 of qrels/train.tsv train, and the reported metrics are those of the runs
    written beside them; the card says what was adapted from what."""
    metrics = json.loads((adapted / "metrics.json").read_text())
    assert metrics["queries"] == {"train": 40, "dev": 12, "pseudo": 0, "trained_on": 40}
    start = SentenceTransformer(starting_model, device="cpu")
    model = SentenceTransformer(str(adapted / "model"), device="cpu")
    assert model[0].auto_model.config.num_hidden_layers == start[0].auto_model.config.num_hidden_layers == 2
    trained = model[0].auto_model.embeddings.word_embeddings.weight
    assert not np.allclose(trained.detach().numpy(), start[0].auto_model.embeddings.word_embeddings.weight.detach().numpy())
    dev_qrels = load_beir(tiny_beir, "dev").qrels
    # the teacher is the starting model: it reads queries and passages as the student does, so it ranks the same
    before, teacher = (read_trec_run(adapted / "runs" / f"dev-{run}.trec") for run in ("student-before", "teacher"))
    top10 = lambda run: {q: sorted(docs, key=docs.get, reverse=True)[:10] for q, docs in run.items()}  # noqa: E731
    assert top10(teacher) == top10(before)
    for name, run in (("student_before", "student-before"), ("student_after", "student-after"), ("teacher", "teacher")):
        written = read_trec_run(adapted / "runs" / f"dev-{run}.trec")
        assert set(written) == set(dev_qrels)
        assert evaluate_run(written, dev_qrels)["ndcg@10"] == pytest.approx(metrics["dev"][name]["ndcg@10"], abs=1e-9)
    card = json.loads((adapted / "model" / "tas_balanced.json").read_text())
    assert card["data"]["student"].startswith(f"{starting_model} itself")
    assert card["data"]["dev queries"] == "12 judged queries of qrels split 'dev'"
    assert card["teachers"]["pairwise"].startswith(f"{starting_model}: cosine similarity x 20")


def test_several_teachers_are_averaged_and_the_corpus_alone_trains_on_pseudo_queries(
    tiny_beir: Path, small_student_path: str, minilm_path: str, tmp_path: Path
) -> None:
    """Guards --teachers (two bi-encoders: the card names their mean, the work folder holds both caches, the teacher's
    dev run is the ensemble's) and --no-judged (no judged query trains: only the pseudo-queries, one per document;
    the judged dev queries still evaluate)."""
    metrics = _adapt(tiny_beir, tmp_path / "out", small_student_path, "--teachers", small_student_path, minilm_path,
                     "--no-judged", "--dev-split", "dev", "--pseudo-queries", "first-sentence")
    assert metrics["queries"]["train"] == 0 and metrics["queries"]["dev"] == 12
    assert metrics["queries"]["trained_on"] == metrics["queries"]["pseudo"] > 250
    card = json.loads((tmp_path / "out" / "model" / "tas_balanced.json").read_text())
    assert card["teachers"]["pairwise"].startswith(f"the mean of {small_student_path} and {minilm_path}")
    assert card["data"]["judged training queries"] == "none judged (the corpus alone)"
    assert len(list((tmp_path / "out" / "work").glob("teacher-embeddings-*"))) == 2
    # the ensemble retrieves differently from its first member alone (the starting model)
    assert metrics["dev"]["teacher"] != metrics["dev"]["student_before"]


def test_a_bare_corpus_adapts_without_evaluation(tiny_beir: Path, small_student_path: str, tmp_path: Path) -> None:
    """Guards a folder holding only corpus.jsonl: pseudo-queries train, nothing is evaluated, the model is written."""
    bare = tmp_path / "corpus-only"
    bare.mkdir()
    shutil.copy(tiny_beir / "corpus.jsonl", bare / "corpus.jsonl")
    metrics = _adapt(bare, tmp_path / "out", small_student_path, "--pseudo-queries", "first-sentence")
    assert metrics["dev"] is None and metrics["gain"] is None and metrics["queries"]["dev"] == 0
    assert metrics["queries"]["trained_on"] == metrics["queries"]["pseudo"] > 250
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "runs").exists()


def _error(arguments: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(arguments) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("st-tasb adapt: error: ") and "Traceback" not in "\n".join(lines)
    return lines[-1].removeprefix("st-tasb adapt: error: ")


def test_bad_input_is_named_in_one_line_and_nothing_is_replaced(
    adapted: Path, tiny_beir: Path, scifact_dir: Path, small_student_path: str, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """Guards the command's errors: a folder with no corpus, a model path that does not load, an unknown recipe, a
    work folder holding another data set's steps, and an output folder of the user's; none of them writes a file."""
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["adapt", "--model", small_student_path, *FAST]
    assert _error([*common, "--data", str(empty), "--output", str(tmp_path / "a")], capsys) == (
        f"corpus: file not found: {empty / 'corpus.jsonl'}")
    assert not (tmp_path / "a").exists()
    message = _error(["adapt", "--model", str(tmp_path / "no-model"), "--data", str(tiny_beir), "--output",
                      str(tmp_path / "b"), *FAST], capsys)
    assert message == f"model folder not found: {tmp_path / 'no-model'}" and not (tmp_path / "b").exists()
    message = _error([*common, "--data", str(tiny_beir), "--output", str(tmp_path / "c"), "--recipe", "best"], capsys)
    assert "'best'" in message and "st-tasb" in message and not (tmp_path / "c").exists()
    message = _error([*common, "--data", str(scifact_dir), "--output", str(tmp_path / "d"), "--work-dir",
                      str(adapted / "work")], capsys)
    assert message.startswith(f"the work folder {adapted / 'work'} holds the prepared steps of another data set")
    assert not (tmp_path / "d").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    message = _error([*common, "--data", str(tiny_beir), "--output", str(mine)], capsys)
    assert str(mine) in message and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_starting_model_as_teacher_reads_long_queries_as_the_student_does(minilm_path: str) -> None:
    """Guards the teacher's query cap: a claim longer than MS MARCO's 30-token queries is scored by the teacher from
    the same tokens the student reads (the default), and the demo's preset keeps the 30 its reported runs used."""
    from st_tasb.cli.adapt_config import AdaptConfig
    from st_tasb.cli.adapt_inputs import _teacher
    from st_tasb.cli.adapt_pipeline import _starting_student

    claim = ("Patients with chronic kidney disease who receive erythropoiesis-stimulating agents to a higher haemoglobin "
             "target have more strokes, more vascular access thromboses and no better quality of life than those "
             "treated to a lower target.")
    passages = ["Anaemia correction in chronic kidney disease raised the risk of stroke.", "Coral reefs bleach."]
    config = AdaptConfig(model=minilm_path)
    student = _starting_student(config)
    assert len(student.tokenize([claim])["input_ids"][0]) > 40
    expected = config.teacher_scale * student.similarity(student.encode_query([claim]), student.encode_document(passages))
    teacher = _teacher(minilm_path, config)
    torch.testing.assert_close(teacher.score([claim], passages), expected, rtol=1e-4, atol=1e-4)
    demo = _teacher(minilm_path, dataclasses.replace(AdaptConfig.demo(), model=minilm_path))
    assert not torch.allclose(demo.score([claim], passages), expected, atol=1e-3)
