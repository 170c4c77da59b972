"""Bad input and damaged files: each error names the file, row or setting, and nothing of the user's is replaced."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from st_tasb.cli import main
from st_tasb.data.files import CorruptFileError
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.scoring import score_candidates
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.teachers import BiEncoderTeacher
from st_tasb.training.losses import DualTeacherMarginMSELoss


def saved_table(folder: Path) -> Path:
    TeacherScoreTable.from_margins([1, 1, 2], [10, 10, 11], [12, 13, 14], [0.5, 1.0, 2.0]).save(folder)
    return folder


def test_a_damaged_saved_table_names_its_file(tmp_path: Path) -> None:
    """Guards damaged table folders: a truncated Arrow file and a corrupt description file are named."""
    folder = saved_table(tmp_path / "table")
    (folder / "teacher_score_table.json").write_text('{"source": ')
    with pytest.raises(CorruptFileError, match=r"teacher_score_table\.json: cannot read this teacher score table"):
        TeacherScoreTable.load(folder)
    folder = saved_table(tmp_path / "table2")
    arrow = next(folder.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=str(folder)):
        TeacherScoreTable.load(folder)


def test_damaged_clusters_and_scoring_files_name_themselves(tmp_path: Path) -> None:
    """Guards the other files st-tasb writes: a truncated centroids.npy and a corrupt scoring manifest."""
    clusters = QueryClusters.fit_embeddings(np.eye(4, dtype=np.float32), [1, 2, 3, 4], k=2, seed=0)
    folder = clusters.save(tmp_path / "clusters")
    centroids = Path(folder) / "centroids.npy"
    centroids.write_bytes(centroids.read_bytes()[:90])
    with pytest.raises(CorruptFileError, match=r"centroids\.npy: cannot read this cluster centroids file"):
        QueryClusters.load(folder)
    work = tmp_path / "shards"
    work.mkdir()
    (work / "manifest.json").write_text('{"teacher": "\u0001')
    store = TextStore.from_records([("q", "x"), ("d", "y")])
    teacher = BiEncoderTeacher(cache=(np.ones((2, 2)), np.ones((2, 2))), similarity_fn_name="dot", device="cpu")
    pairs = Dataset.from_dict({"query_id": ["q"], "positive_id": ["d"], "negative_id": ["q"]})
    with pytest.raises(CorruptFileError, match=r"manifest\.json: cannot read this scoring job manifest"):
        score_candidates(teacher, pairs, store, store, work, show_progress_bar=False)


def test_from_dataset_names_the_bad_column_row_and_an_empty_dataset() -> None:
    """Guards Hub-style input: a score that is not a number is named with its column and row (not a raw ArrowInvalid),
    and an empty dataset is called empty."""
    bad = Dataset.from_dict({"query_id": [1, 1], "positive_id": [2, 2], "negative_id": [3, 4], "score": ["1.5", "high"]})
    with pytest.raises(ValueError, match=r"column 'score' must hold numbers; row 1 holds 'high'"):
        TeacherScoreTable.from_dataset(bad)
    empty = Dataset.from_dict({"query_id": [], "positive_id": [], "negative_id": [], "score": []})
    with pytest.raises(ValueError, match="the dataset is empty"):
        TeacherScoreTable.from_dataset(empty)


def test_margins_are_checked_before_the_teacher_is_blamed() -> None:
    """Guards the culprit: more margins than rows is reported as a margin error, before the in-batch teacher runs."""
    teacher = BiEncoderTeacher(cache=(np.ones((2, 2)), np.ones((4, 2))), similarity_fn_name="dot", device="cpu")
    loss = DualTeacherMarginMSELoss(None, teacher, alpha=0.5)
    embeddings = [torch.zeros(2, 2)] * 3
    labels = {"margin": torch.zeros(3), "query_index": [0, 1], "positive_index": [0, 1], "negative_index": [2, 3]}
    with pytest.raises(ValueError, match=r"labels\['margin'\] holds 3 margins for a batch of 2 rows"):
        loss.compute_loss_from_embeddings(embeddings, labels)


def test_the_cli_names_damaged_candidates_and_never_replaces_a_users_files(
    tmp_path: Path, scifact_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """Guards the command line: a truncated candidates file is named in one line (exit 2); an existing --run-output
    and a folder of someone else's files as train --output are refused without --overwrite, and left untouched."""
    candidates = tmp_path / "pairs.parquet"
    candidates.write_bytes(b"PAR1 not really")
    code = main(["score", "--candidates", str(candidates), "--data", str(scifact_dir), "--teachers", "bi-encoder:x",
                 "--output", str(tmp_path / "t")])
    assert code == 2 and f"{candidates}: cannot read this candidates file" in capsys.readouterr().err
    run = tmp_path / "run.trec"
    run.write_text("mine\n")
    code = main(["evaluate", "--model", "m", "--data", str(scifact_dir), "--run-output", str(run)])
    assert code == 2 and "exists; choose a new file or add --overwrite" in capsys.readouterr().err
    assert run.read_text() == "mine\n"
    other = tmp_path / "my-dataset"
    other.mkdir()
    (other / "README.md").write_text("my notes")
    code = main(["train", "--table", "t", "--data", str(scifact_dir), "--student", "s", "--output", str(other),
                 "--random-batches"])
    assert code == 2 and "holds files that st-tasb did not write (README.md)" in capsys.readouterr().err
    assert (other / "README.md").read_text() == "my notes"


@pytest.mark.parametrize(("command", "own_file", "users_file"), [
    ("mine", "mining.json", "pairs.parquet"),
    ("score", "teacher_score_table.json", "data-00000-of-00001.arrow"),
    ("demo", "st_tasb_adapt.json", "metrics.json"),
])
def test_no_command_replaces_a_users_files_in_its_output(command: str, own_file: str, users_file: str, tmp_path: Path,
                                                        scifact_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards the README's promise for mine, score and demo: an --output folder holding a user's file where the
    command would write its own (beside notes.txt) is refused before any work, and the file is left untouched; a
    folder the command wrote (its record file) is not refused."""
    from st_tasb.data.files import check_output

    output = tmp_path / "out"
    output.mkdir()
    (output / users_file).write_text("mine")
    (output / "notes.txt").write_text("notes")
    arguments = {
        "mine": ["mine", "--data", str(scifact_dir), "--output", str(output)],
        "score": ["score", "--candidates", str(tmp_path / "c.parquet"), "--data", str(scifact_dir), "--teachers", "x",
                  "--output", str(output)],
        "demo": ["demo", "--data", str(scifact_dir), "--output", str(output), "--quick"],
    }[command]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert f"{output}/ holds files that st-tasb did not write (" in error and users_file in error and "notes.txt" in error
    assert (output / users_file).read_text() == "mine"
    (output / own_file).write_text("{}")
    check_output(output, "--output", record=own_file)  # its own folder: accepted


def test_train_refuses_to_restart_over_checkpoints_or_replace_a_trained_model(
    tmp_path: Path, scifact_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """Guards train --output after a kill -9 (checkpoints, no model): the same command without --resume stops and
    says to add --resume or --overwrite, instead of training from step 0 over the checkpoints; a folder holding a
    finished model is not replaced without --overwrite."""
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (unfinished / "checkpoints" / "checkpoint-6").mkdir()
    base = ["train", "--table", "t", "--data", str(scifact_dir), "--student", "s", "--random-batches"]
    assert main([*base, "--output", str(unfinished)]) == 2
    error = capsys.readouterr().err
    assert "holds the checkpoints of an unfinished run (latest: checkpoint-6): add --resume" in error
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "tas_balanced.json").write_text("{}")
    assert main([*base, "--output", str(finished)]) == 2
    assert "holds a model trained earlier" in capsys.readouterr().err
    assert main([*base, "--output", str(finished), "--overwrite"]) == 2  # gets past the check: the table is missing
    assert "holds a model" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["mine", "score", "cluster"])
def test_an_unwritable_output_fails_before_the_work(command: str, tmp_path: Path, scifact_dir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Guards time: an --output that cannot be written is reported at once, naming it, before any data is read."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    output = blocker / "out"
    extra = {"mine": [], "score": ["--candidates", "none", "--teachers", "m"], "cluster": ["--model", "m"]}[command]
    assert main([command, "--data", "/nonexistent", "--output", str(output), *extra]) == 2
    assert f"--output {output} cannot be written: {blocker} is a file" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """Guards an interrupted command: no traceback, one line saying what was kept and how to resume, exit 130."""
    from st_tasb.cli import score as score_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(score_command, "COMMAND", dataclasses.replace(score_command.COMMAND, run=interrupted))
    code = main(["score", "--candidates", "c", "--data", "d", "--teachers", "m", "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 130 and "st-tasb score: interrupted. Finished shards are kept" in err and "Traceback" not in err


def test_a_repeated_pair_is_refused_naming_its_lines_unless_deduplicated(tmp_path: Path) -> None:
    """Guards the duplicate policy: a pair listed twice (here with different margins) is an error naming both TSV
    lines, at the one place every loader's table goes through; deduplicate('first') or ('mean') is the way out."""
    from st_tasb.training.dataset import build_training_dataset

    tsv = tmp_path / "scores.tsv"
    tsv.write_text("3.0\t1.0\t1\t10\t11\n2.0\t1.0\t1\t10\t12\n5.0\t1.0\t1\t10\t11\n")
    table = TeacherScoreTable.from_tsv(tsv, cache_dir=tmp_path, show_progress_bar=False)
    queries = TextStore.from_records([(1, "q")])
    corpus = TextStore.from_records([(10, "a"), (11, "b"), (12, "c")])
    with pytest.raises(ValueError, match=rf"pair at {tsv}:3 twice \(also at {tsv}:1\)"):
        build_training_dataset(table, queries, corpus)
    first = build_training_dataset(table.deduplicate("first"), queries, corpus)
    mean = build_training_dataset(table.deduplicate("mean"), queries, corpus)
    assert sorted(first.data.column("margin").to_pylist()) == [1.0, 2.0]
    assert sorted(mean.data.column("margin").to_pylist()) == [1.0, 3.0]
    with pytest.raises(ValueError, match="keep must be 'first' or 'mean'"):
        table.deduplicate("last")


def test_numeric_arguments_are_checked_for_type_as_well_as_range(scifact_parts) -> None:
    """Guards the public API's numbers: a string, a float where a whole number belongs, NaN or a bool is named with
    its argument, not accepted or turned into a library error later."""
    from st_tasb.prepare.mining import mine_candidates
    from st_tasb.retrieval.search import SearchSettings
    from st_tasb.training.dataset import build_training_dataset
    from st_tasb.training.sampler import TopicAwareBalancedBatchSampler
    from st_tasb.training.settings import TrainingSettings

    dataset = build_training_dataset(scifact_parts.table, scifact_parts.data.queries, scifact_parts.data.corpus)
    cases = [
        (lambda: TopicAwareBalancedBatchSampler(dataset, "16", True, topic_aware=False), "batch_size must be an integer"),
        (lambda: TopicAwareBalancedBatchSampler(dataset, 16, True, n_bins=2.5, topic_aware=False), "n_bins must be an integer"),
        (lambda: SearchSettings(top_k=True), "top_k must be an integer"),
        (lambda: mine_candidates(scifact_parts.data, top_k="100"), "top_k must be an integer"),
        (lambda: QueryClusters.fit_embeddings(np.eye(4, dtype=np.float32), [1, 2, 3, 4], k=2.0), "k must be an integer"),
        (lambda: TrainingSettings(learning_rate="7e-6"), "learning_rate='7e-6' must be float"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    store = TextStore.from_records([("q", "x"), ("d", "y")])
    pairs = Dataset.from_dict({"query_id": ["q"], "positive_id": ["d"], "negative_id": ["q"]})
    teacher = BiEncoderTeacher(cache=(np.ones((2, 2)), np.ones((2, 2))), similarity_fn_name="dot", device="cpu")
    with pytest.raises(ValueError, match="scale must be a finite number"):
        score_candidates(teacher, pairs, store, store, "unused", scale=float("nan"))


def test_the_same_bad_input_gives_the_same_error_from_python_and_the_cli(tmp_path: Path, scifact_dir: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Guards parity: the CLI's one-line error is the Python error's message, for a malformed run and a bad table."""
    from st_tasb.data.runs import read_trec_run

    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 one 1.0 t\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\t0\td1\t1\n")
    with pytest.raises(ValueError) as python_error:
        read_trec_run(run)
    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"st-tasb evaluate: error: {python_error.value}"
    folder = saved_table(tmp_path / "table")
    (folder / "teacher_score_table.json").write_text("{")
    with pytest.raises(CorruptFileError) as python_error:
        TeacherScoreTable.load(folder)
    assert main(["train", "--table", str(folder), "--data", str(scifact_dir), "--student", "s", "--output",
                 str(tmp_path / "m"), "--random-batches"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"st-tasb train: error: {python_error.value}"


def test_a_full_disk_while_scoring_names_the_shard_and_leaves_no_partial(tmp_path: Path, monkeypatch) -> None:
    """Guards st-tasb score's writes: a full disk while a shard is written is an error naming the shard's path (not
    a bare pyarrow error), and neither the shard nor a partial file is left, so a rerun scores it again."""
    import errno

    from st_tasb.prepare import scoring

    def fills_the_disk(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scoring.pq, "write_table", fills_the_disk)
    stores = (TextStore.from_records([("q1", "a")]), TextStore.from_records([("d1", "x"), ("d2", "y")]))
    pairs = Dataset.from_dict({"query_id": ["q1"], "positive_id": ["d1"], "negative_id": ["d2"]})
    class LengthScorer:  # a PairScorer: the passage's length as its score
        name = "length"

        def score_pairs(self, queries, corpus, query_positions, doc_positions):
            return np.array([len(corpus.texts([p])[0]) for p in doc_positions], dtype=np.float32)

    teacher = LengthScorer()
    work = tmp_path / "shards"
    with pytest.raises(OSError, match=r"shard-00000\.parquet: cannot write this scoring shard \(No space left on device\)"):
        score_candidates(teacher, pairs, *stores, work, show_progress_bar=False)
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json"]
