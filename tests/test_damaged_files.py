"""Damaged model files and checkpoints are named: every file a checkpoint resumes from is checked before it counts
as complete, and a damaged model folder is one line naming the file and what is wrong (issue 30, item 3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from st_tasb.cli import main
from st_tasb.training.checkpoints import checkpoint_problem

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def truncated(path: Path) -> None:
    """Cut ``path`` to half its size (a process killed, or a disk filled, while writing it)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path: Path) -> None:
    """Replace ``path`` by random bytes of its size."""
    path.write_bytes(os.urandom(path.stat().st_size))


@pytest.fixture(scope="module")
def train_arguments(table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str) -> list[str]:
    return [
        "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--batch-size", "8", "--save-steps", "1",
        "--learning-rate", "1e-3", "--n-bins", "4", "--cpu",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(train_arguments: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a 2-step run with a checkpoint after each step (copy it before damaging it)."""
    output = tmp_path_factory.mktemp("run") / "model"
    assert main([*train_arguments, "--max-steps", "2", "--output", str(output)]) == 0
    return output


@pytest.mark.parametrize("damage", [truncated, random_bytes])
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_every_file_a_resume_reads_is_checked(finished_run: Path, tmp_path: Path, name: str, damage) -> None:
    """Guards complete checkpoints: the weights, the optimizer, the schedule and the random state must each open
    (not only the weights and trainer_state.json); a damaged one names its file, and a missing one makes the
    checkpoint incomplete."""
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(finished_run / "checkpoints" / "checkpoint-2", checkpoint)
    assert checkpoint_problem(checkpoint) is None
    damage(checkpoint / name)
    assert checkpoint_problem(checkpoint).startswith(f"damaged ({name}: ")
    (checkpoint / name).unlink()
    problem = checkpoint_problem(checkpoint)
    assert problem.startswith("incomplete (no ") and (name.split(".")[0] in problem or "weights" in problem)


def test_resume_skips_a_checkpoint_with_a_truncated_optimizer_and_warns_once(
    finished_run: Path, train_arguments: list[str], tmp_path: Path
) -> None:
    """Guards --resume against torch's "PytorchStreamReader failed reading zip archive": a truncated optimizer.pt in
    the latest checkpoint is named in one warning (printed once, not twice) and the run resumes from the previous
    complete checkpoint."""
    output = tmp_path / "model"
    shutil.copytree(finished_run, output)
    truncated(output / "checkpoints" / "checkpoint-2" / "optimizer.pt")
    command = [sys.executable, "-m", "st_tasb", "--quiet", *train_arguments, "--max-steps", "3", "--output",
               str(output), "--resume"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "skipping checkpoint" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert "checkpoint-2: it is damaged (optimizer.pt: " in warnings[0] and "resuming from checkpoint-1" in warnings[0]
    assert "PytorchStreamReader" not in result.stderr and "trained 3 steps" in result.stdout


@pytest.mark.parametrize("damage", [truncated, random_bytes])
def test_a_damaged_model_folder_is_named_in_one_line(damage, small_student_path: str, tiny_beir: Path,
                                                     train_arguments: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Guards evaluate --model and train --student: a truncated or random model.safetensors is one line naming the
    file and saying it is damaged (exit 2), not a 50-line SafetensorError traceback."""
    model = tmp_path / "student"
    shutil.copytree(small_student_path, model)
    weights = model / "model.safetensors"
    damage(weights)
    assert main(["evaluate", "--model", str(model), "--data", str(tiny_beir), "--split", "dev", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{weights}: " in error[0] and "damaged" in error[0]
    arguments = [*train_arguments, "--max-steps", "1", "--output", str(tmp_path / "out")]
    arguments[arguments.index("--student") + 1] = str(model)
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert f"{weights}: " in error[-1] and "damaged" in error[-1] and "Traceback" not in "\n".join(error)
    assert not (tmp_path / "out").exists()


def test_the_skipping_warning_prints_once_under_two_processes(train_arguments: list[str], tmp_path: Path,
                                                              torchrun) -> None:
    """Guards the warning of a skipped checkpoint under torchrun: every process checks the checkpoints, only the main
    one warns (it printed once per process), and both resume from the previous complete checkpoint."""
    output = tmp_path / "model"
    arguments = ["-m", "st_tasb", "--quiet", *train_arguments, "--batch-size", "4", "--output", str(output)]
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    torchrun(*arguments, "--max-steps", "2", env=env)
    truncated(output / "checkpoints" / "checkpoint-2" / "optimizer.pt")
    result = torchrun(*arguments, "--max-steps", "3", "--resume", env=env)
    assert result.stderr.count("skipping checkpoint") == 1 and result.stdout.count("trained 3 steps") == 1
