"""Outputs: every command checks its output path with one helper before the work, a failed or interrupted train
leaves nothing empty or half-written and says what it kept, and a resumed run's card holds the whole run (issue 30,
item 4 and the weak cases of the card and Ctrl-C)."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

from st_tasb.cli import main


@pytest.fixture(scope="module")
def train_arguments(table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str) -> list[str]:
    return [
        "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--batch-size", "8", "--learning-rate", "1e-3",
        "--n-bins", "4", "--logging-steps", "1", "--cpu",
    ]  # fmt: skip


def command_line(command: str, output: Path) -> list[str]:
    """``command`` writing to ``output``, with inputs that do not exist (the output is checked before them)."""
    return {
        "mine": ["mine", "--data", "/nonexistent", "--output", str(output)],
        "score": ["score", "--candidates", "/nonexistent", "--data", "/nonexistent", "--teachers", "m", "--output",
                  str(output)],
        "cluster": ["cluster", "--model", "m", "--data", "/nonexistent", "--output", str(output)],
        "train": ["train", "--table", "/nonexistent", "--data", "/nonexistent", "--student", "s", "--random-batches",
                  "--output", str(output)],
        "demo": ["demo", "--data", "/nonexistent", "--output", str(output)],
        "adapt": ["adapt", "--data", "/nonexistent", "--output", str(output)],
        "evaluate": ["evaluate", "--model", "/nonexistent", "--data", "/nonexistent", "--run-output", str(output)],
        "push": ["push", "--model", "/nonexistent", "--repo-id", "me/model", "--dry-run", str(output)],
    }[command]


def last_message(command: str, err: str) -> str:
    """The line ``st-tasb COMMAND`` printed last on stderr (an unfinished progress bar may share it)."""
    return err[err.rindex(f"st-tasb {command}: "):].splitlines()[0]


OUTPUT_OPTION = {"evaluate": "--run-output", "push": "--dry-run", "demo": "the output folder", "adapt": "the output folder"}


@pytest.mark.parametrize("command", ["mine", "score", "cluster", "train", "adapt", "demo", "evaluate", "push"])
def test_every_command_checks_its_output_with_the_one_helper_before_the_work(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Guards one output policy: every command (evaluate --run-output and push --dry-run too) hands its output path to
    files.check_output before it reads anything, and an output under a file is named the same way by all of them."""
    from st_tasb.data import files

    checked = []

    def check_output(path, what, **kwargs):
        checked.append((str(path), what))
        raise ValueError("checked")

    with monkeypatch.context() as patched:
        patched.setattr(files, "check_output", check_output)
        assert main(command_line(command, tmp_path / "out")) == 2
    assert checked == [(str(tmp_path / "out"), OUTPUT_OPTION.get(command, "--output"))]
    assert capsys.readouterr().err.strip().endswith("error: checked")

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(command_line(command, blocker / "out")) == 2
    what = OUTPUT_OPTION.get(command, "--output")
    assert f"error: {what} {blocker / 'out'} cannot be written: {blocker} is a file" in capsys.readouterr().err


@pytest.mark.parametrize("save_steps", [None, 1])
def test_a_full_disk_while_train_saves_leaves_nothing_behind(save_steps: int | None, train_arguments: list[str],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Guards "a failed train leaves no empty output folder": the disk fills while the final model is saved (no
    checkpoints) or while the first checkpoint is written; the error is one line naming what could not be written
    and what is kept, and neither an empty checkpoints/ nor a half-written checkpoint is left."""
    save = SentenceTransformer.save_pretrained

    def fills_the_disk(model, path, *args, **kwargs):
        if save_steps is None and "checkpoint-" in str(path):
            return save(model, path, *args, **kwargs)
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SentenceTransformer, "save_pretrained", fills_the_disk)
    output = tmp_path / "model"
    steps = ["--save-steps", str(save_steps)] if save_steps else []
    assert main([*train_arguments, "--max-steps", "2", *steps, "--output", str(output)]) == 2
    error = last_message("train", capsys.readouterr().err)
    written = f"the checkpoint {output / 'checkpoints' / 'checkpoint-1'}" if save_steps else f"the trained model to {output}"
    assert f"could not {'write' if save_steps else 'save'} {written} (No space left on device)" in error
    assert "no checkpoint was written" in error
    assert list(tmp_path.iterdir()) == []


def test_resume_without_a_checkpoint_fails_and_leaves_nothing(train_arguments: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Guards --resume on an output without checkpoints: refused before any work (the table is not read), and no
    empty checkpoints/ (nor an empty output folder) is left, by the command as by train()."""
    from st_tasb.training.settings import TrainingSettings
    from st_tasb.training.trainer import train

    output = tmp_path / "model"
    arguments = [*train_arguments, "--max-steps", "2", "--save-steps", "1", "--resume", "--output", str(output)]
    arguments[arguments.index("--table") + 1] = "/nonexistent"
    assert main(arguments) == 2
    assert f"--resume: no complete checkpoint in {output / 'checkpoints'} to resume from" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no complete checkpoint"):
        train(SentenceTransformer(train_arguments[train_arguments.index("--student") + 1], device="cpu"), None, None,
              None, output, settings=TrainingSettings(save_steps=1, topic_aware=False, cpu=True),
              resume_from_checkpoint=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("save_steps", [None, 1])
def test_ctrl_c_in_train_says_what_exists(save_steps: int | None, train_arguments: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Guards the Ctrl-C line of train: interrupted at step 2, it names the checkpoint to resume from when there is
    one, and says there is none without --save-steps (where it used to promise checkpoints), leaving nothing empty."""
    step = SentenceTransformerTrainer.training_step
    calls = []

    def interrupted_at_step_2(trainer, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(trainer, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "training_step", interrupted_at_step_2)
    output = tmp_path / "model"
    steps = ["--save-steps", str(save_steps)] if save_steps else []
    assert main([*train_arguments, "--max-steps", "3", *steps, "--output", str(output)]) == 130
    error = last_message("train", capsys.readouterr().err)
    if save_steps:
        checkpoint = output / "checkpoints" / "checkpoint-1"
        assert f"interrupted. The last checkpoint is {checkpoint}: run the same command with --resume" in error
        assert sorted(path.name for path in checkpoint.parent.glob("checkpoint-*")) == ["checkpoint-1"]
    else:
        assert "interrupted. No checkpoint was written (--save-steps writes them), so there is nothing to resume" in error
        assert list(tmp_path.iterdir()) == []


def test_a_resumed_runs_card_holds_the_whole_loss_history_and_training_time(train_arguments: list[str],
                                                                           tmp_path: Path) -> None:
    """Guards the card of a resumed run: its training logs hold the loss rows logged before the resume (from the
    checkpoint), and its training time adds the earlier runs' seconds (kept in each checkpoint's trainer_state.json)
    to this run's. Here the first run's seconds are set to two hours in the checkpoint resumed from."""
    output = tmp_path / "model"
    arguments = [*train_arguments, "--save-steps", "1", "--output", str(output)]
    assert main([*arguments, "--max-steps", "2"]) == 0
    state_file = output / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["stateful_callbacks"]["TrainingClock"]["attributes"]["trained_seconds"] > 0
    state["stateful_callbacks"]["TrainingClock"]["attributes"]["trained_seconds"] = 7200.0
    state_file.write_text(json.dumps(state))
    shutil.rmtree(output / "checkpoints" / "checkpoint-1")
    assert main([*arguments, "--max-steps", "3", "--resume"]) == 0
    card = (output / "README.md").read_text()
    logged_steps = [int(step) for step in re.findall(r"^\| [\d.]+\s*\| (\d+)\s*\| [\d.]+", card, flags=re.MULTILINE)]
    assert logged_steps == [1, 2, 3]
    assert re.search(r"- \*\*Training\*\*: 2\.0 hours", card)


def test_a_failed_write_names_the_file_not_its_temporary_name(tmp_path: Path) -> None:
    """Guards the errors of files written under a temporary name (TREC runs, shards, tables): a write that fails (here
    the folder vanished, as an unmounted disk) names the file asked for, not ``.NAME.partial-PID``."""
    from st_tasb.data.files import replacing

    target = tmp_path / "runs" / "run.trec"
    with pytest.raises(FileNotFoundError) as error, replacing(target) as partial:
        shutil.rmtree(target.parent)
        partial.write_text("q1 Q0 d1 1 2.0 st-tasb\n")
    assert error.value.filename == str(target) and "partial" not in str(error.value)
