"""Crash safety: st-tasb score and train killed with SIGKILL at chosen points (tests/scripts/kill_at.py), then run
again. Resuming loses at most the unfinished shard or checkpoint, never a finished one, and a half-written file or
folder is never taken for a finished one (files and folders are written under a temporary name, then renamed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from st_tasb.cli import main
from st_tasb.prepare.table import TeacherScoreTable

KILL_AT = Path(__file__).parent / "scripts" / "kill_at.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def killed_at(target: str, call: int, when: str, arguments: list[str]) -> None:
    """Run ``st-tasb ARGUMENTS`` and check that it was killed at the ``call``-th call of ``target``."""
    result = subprocess.run([sys.executable, str(KILL_AT), target, str(call), when, "--", *arguments], env=ENV,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def table_rows(folder: Path) -> list[tuple]:
    data = TeacherScoreTable.load(folder).dataset
    return list(zip(*(data[c][:] for c in ("query_id", "positive_id", "negative_id", "pos_score", "neg_score"))))


@pytest.fixture(scope="module")
def score_arguments(candidates: Path, tiny_beir: Path, small_student_path: str) -> list[str]:
    return ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--teachers",
            f"bi-encoder:{small_student_path}", "--shard-size", "100", "--batch-size", "16"]


def test_score_killed_while_writing_a_shard_resumes_from_the_finished_ones(score_arguments: list[str], table_dir: Path,
                                                                          tmp_path: Path) -> None:
    """Killed after the third shard's file was written under its temporary name, before the rename: the two finished
    shards are kept and reused as they are, the third is not taken for finished, and the resumed table equals an
    uninterrupted run's (the table_dir fixture, same candidates, teacher and shard size)."""
    output = tmp_path / "table"
    arguments = [*score_arguments, "--output", str(output)]
    killed_at("pyarrow.parquet:write_table", 3, "after", arguments)
    shards = output.with_name("table.shards")
    finished = sorted(path.name for path in shards.glob("shard-*.parquet"))
    assert finished == ["shard-00000.parquet", "shard-00001.parquet"]
    assert len(list(shards.glob(".shard-00002.parquet.partial-*"))) == 1 and not output.exists()
    kept = {name: (shards / name).stat().st_mtime_ns for name in finished}

    assert main(arguments) == 0
    assert {name: (shards / name).stat().st_mtime_ns for name in finished} == kept  # reused, not written again
    assert not list(shards.glob(".*partial-*"))  # the killed run's temporary file is gone
    assert table_rows(output) == table_rows(table_dir)


def test_score_killed_while_saving_the_table_leaves_no_half_table(score_arguments: list[str], table_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Killed while the table's Arrow files were being written: nothing is under --output (a half table there would
    load, or block the rerun as someone else's files); the same command reuses every shard and saves the table."""
    output = tmp_path / "table"
    arguments = [*score_arguments, "--output", str(output)]
    killed_at("datasets:Dataset.save_to_disk", 1, "after", arguments)
    assert not output.exists() and len(list(tmp_path.glob(".table.partial-*"))) == 1
    assert main(arguments) == 0
    assert table_rows(output) == table_rows(table_dir)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["table", "table.shards"]


@pytest.fixture(scope="module")
def train_arguments(table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str) -> list[str]:
    return [
        "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--batch-size", "8", "--max-steps", "3",
        "--save-steps", "1", "--learning-rate", "1e-3", "--n-bins", "4", "--cpu",
    ]  # fmt: skip


def test_train_killed_while_writing_a_checkpoint_resumes_from_the_last_finished_one(
    train_arguments: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while checkpoint-2 was being written (its weights and optimizer written, its trainer_state.json not):
    --resume skips it with a warning, resumes from checkpoint-1, writes step 2 again, and ends with the same
    weights as a run that was never killed (the same seed gives the same batches after a resume)."""
    output = tmp_path / "model"
    arguments = [*train_arguments, "--output", str(output)]
    killed_at("transformers.trainer:Trainer._save_rng_state", 2, "before", arguments)
    checkpoints = output / "checkpoints"
    assert sorted(path.name for path in checkpoints.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (checkpoints / "checkpoint-2" / "trainer_state.json").exists()
    first_checkpoint = load_file(checkpoints / "checkpoint-1" / "model.safetensors")

    with caplog.at_level("WARNING", logger="st_tasb.training.trainer"):
        assert main([*arguments, "--resume"]) == 0
    assert "skipping checkpoint" in caplog.text and "checkpoint-2: it is incomplete" in caplog.text
    resumed_checkpoint = load_file(checkpoints / "checkpoint-1" / "model.safetensors")
    assert all((first_checkpoint[name] == tensor).all() for name, tensor in resumed_checkpoint.items())  # untouched

    uninterrupted = tmp_path / "uninterrupted"
    assert main([*train_arguments, "--output", str(uninterrupted)]) == 0
    resumed, reference = load_file(output / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(resumed[name].allclose(reference[name], atol=1e-6) for name in reference)


def test_train_killed_while_saving_the_model_leaves_no_half_model(train_arguments: list[str], tmp_path: Path) -> None:
    """Killed after the weights of the final model were written, before its card: nothing of the model is under
    --output (only the checkpoints), and --resume finishes the run from the last checkpoint and saves it."""
    output = tmp_path / "model"
    arguments = [*train_arguments, "--max-steps", "2", "--output", str(output)]
    killed_at("st_tasb.training.model_card:TASBModelCard.save", 1, "before", arguments)
    assert sorted(path.name for path in output.iterdir()) == ["checkpoints"]
    assert len(list(tmp_path.glob(".model.partial-*"))) == 1
    assert main([*arguments, "--resume"]) == 0
    assert (output / "model.safetensors").is_file() and (output / "README.md").is_file()
    assert not list(tmp_path.glob(".model.partial-*"))
