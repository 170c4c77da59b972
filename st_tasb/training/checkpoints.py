"""Checkpoints and the saved model: which checkpoint a run resumes from, whether one is complete, the record of
the settings the checkpoints belong to, and saving the trained model so that nothing half-written is left."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState

from st_tasb.data.files import reading, replacing_folder, write_json
from st_tasb.data.models import weights_problem
from st_tasb.training.model_card import TASBModelCard
from st_tasb.training.settings import RESUMABLE_CHANGES, TrainingSettings

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
"""Subfolder of the output folder that holds Trainer checkpoints (never uploaded by ``st-tasb push``)."""
RUN_SETTINGS_FILE = "st_tasb_settings.json"
"""Written next to the checkpoints: the settings of the run they belong to (a resume must match them)."""


def record_settings(checkpoint_dir: Path, settings: TrainingSettings) -> None:
    write_json(checkpoint_dir / RUN_SETTINGS_FILE, dataclasses.asdict(settings))


def check_resume(checkpoint_dir: Path, resume: str | bool, settings: TrainingSettings, *, warn: bool = True) -> Path:
    """The checkpoint to resume from: the one given, else the latest complete one in ``checkpoint_dir`` (later ones
    that a killed run left incomplete or that are damaged are skipped, with a warning when ``warn``: every process
    of a run checks, the main one warns).

    Raises:
        ValueError: for checkpoints of a run with other settings (naming what differs), a given checkpoint that is
            incomplete or damaged (naming the one to resume from instead), or no complete checkpoint.
    """
    recorded_file = checkpoint_dir / RUN_SETTINGS_FILE
    if recorded_file.is_file():
        with reading(recorded_file, "record of the run's settings"):
            recorded = json.loads(recorded_file.read_text())
        current = dataclasses.asdict(settings)
        differences = [
            f"{name}: checkpoints {recorded.get(name)!r}, now {value!r}"
            for name, value in current.items()
            if name not in RESUMABLE_CHANGES and recorded.get(name, value) != value
        ]
        if differences:
            raise ValueError(
                f"the checkpoints in {checkpoint_dir} belong to a run with other settings ({'; '.join(differences)}): "
                "resume with the same settings, or train into another --output"
            )
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=_step)
    if isinstance(resume, (str, Path)):
        chosen = Path(resume)
        problem = checkpoint_problem(chosen)
        if problem:
            earlier = [path for path in checkpoints if _step(path) < _step(chosen) and not checkpoint_problem(path)]
            hint = f"resume from {earlier[-1]}" if earlier else "no earlier checkpoint is complete: train again"
            raise ValueError(f"checkpoint {chosen} is {problem}; {hint}")
        return chosen
    problems = {path: checkpoint_problem(path) for path in checkpoints}  # each opened once
    complete = [path for path in checkpoints if not problems[path]]
    if not complete:
        found = f"the checkpoints there are all incomplete ({', '.join(p.name for p in checkpoints)})" if checkpoints else "there is none"
        raise ValueError(f"--resume: no complete checkpoint in {checkpoint_dir} to resume from ({found}): train again")
    for skipped in checkpoints[checkpoints.index(complete[-1]) + 1 :] if warn else []:
        logger.warning("skipping checkpoint %s: it is %s; resuming from %s (the run writes that step again)",
                       skipped, problems[skipped], complete[-1].name)
    return complete[-1]


CHECKPOINT_FILES = {
    "optimizer.pt": "the optimizer's state",
    "scheduler.pt": "the learning-rate schedule",
    "rng_state*.pth": "the random state (one file per process)",
}
"""What a checkpoint holds besides its weights and ``trainer_state.json``: a resume reads each of them (st-tasb saves
every checkpoint whole, never ``save_only_model``); ``scaler.pt`` (fp16) is checked when it is there."""


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a process killed while writing it, a damaged file), or None when it
    is complete.

    The Trainer writes a checkpoint's weights first, then the optimizer, the schedule and the random state, and its
    ``trainer_state.json`` last: a checkpoint is complete when its state file parses and every file a resume reads
    (:data:`CHECKPOINT_FILES`, the weights) is there and opens (:func:`~st_tasb.data.models.weights_problem`: the
    file's index only, so GB files are checked at once).
    """
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return "incomplete (no model weights: the run stopped while writing it)"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "incomplete (no complete trainer_state.json: the run stopped while writing it)"
    files = [*weights, *checkpoint.glob("scaler.pt")]
    for pattern, what in CHECKPOINT_FILES.items():
        found = sorted(checkpoint.glob(pattern))
        if not found:
            return f"incomplete (no {pattern}, {what})"
        files += found
    for file in files:
        problem = weights_problem(file)
        if problem:
            return f"damaged ({file.name}: {problem})"
    return None


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def checkpoints_kept(checkpoint_dir: Path) -> str:
    """What a stopped run leaves to resume from, in words: the last complete checkpoint in ``checkpoint_dir`` and how
    to go on from it, or that there is none."""
    complete = [path for path in sorted(checkpoint_dir.glob("checkpoint-*"), key=_step) if not checkpoint_problem(path)]
    if not complete:
        return "no checkpoint was written (--save-steps writes them), so there is nothing to resume from"
    return f"the last checkpoint is {complete[-1]}: run the same command with --resume to go on from it"


def save_model(student: SentenceTransformer, card: TASBModelCard, output_dir: Path) -> None:
    """Save the trained student and its card into ``output_dir``: first complete under a temporary name beside it,
    then moved in, so that a full disk or a crash while saving never leaves a half-written model under the name.

    Raises:
        OSError: naming ``output_dir`` and the cause (e.g. no space left), and what is kept to resume from.
    """
    try:
        with replacing_folder(output_dir) as partial:
            student.save_pretrained(str(partial))
            card.save(partial)
    except OSError as error:
        raise OSError(error.errno, f"could not save the trained model to {output_dir} ({error.strerror or error}); "
                                   f"nothing of it was written there; {checkpoints_kept(output_dir / CHECKPOINTS_DIR)}"
                      ) from error


def remove_unused(folders: list[Path], checkpoint_dir: Path, earlier: set[Path]) -> Path | None:
    """After a failed or interrupted run: remove the checkpoint it was writing when it stopped (one not in
    ``earlier`` that is incomplete: a full disk, Ctrl-C) and the ``folders`` it created that then hold no checkpoint
    (only its settings record, if any), innermost first, so that a failure leaves nothing empty or half-written.

    Returns:
        The checkpoint removed, if any.
    """
    removed = None
    for checkpoint in sorted(set(checkpoint_dir.glob("checkpoint-*")) - earlier, key=_step):
        if checkpoint_problem(checkpoint):
            shutil.rmtree(checkpoint, ignore_errors=True)
            removed = checkpoint
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.glob("checkpoint-*")):
            (folder / RUN_SETTINGS_FILE).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
    return removed


class TrainingClock(TrainerCallback, ExportableState):
    """The seconds a run has trained, those of the runs it resumed from included.

    The count is saved in every checkpoint's ``trainer_state.json`` (a stateful callback's state, written with it)
    and read back from there when a run resumes, so the card of a resumed run states the whole training time.
    """

    def __init__(self) -> None:
        self.trained_seconds = 0.0
        self._started: float | None = None

    @property
    def seconds(self) -> float:
        """The seconds trained so far: the earlier runs' and this one's."""
        return self.trained_seconds + (time.monotonic() - self._started if self._started is not None else 0.0)

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"trained_seconds": self.seconds}}

    def on_train_begin(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        saved = state.stateful_callbacks.get(type(self).__name__) or {}  # a resumed run: the checkpoint's count
        self.trained_seconds = float((saved.get("attributes") or {}).get("trained_seconds", 0.0))
        self._started = time.monotonic()


def restore_card_history(student: SentenceTransformer, log_history: list[dict[str, Any]], clock: TrainingClock) -> None:
    """Give the card of a resumed run the loss rows logged before the resume (the checkpoint's log history, which
    sentence-transformers' card callback never saw) and the whole training time (``clock``'s)."""
    card_data = student.model_card_data
    logged = {row["Step"] for row in card_data.training_logs}
    earlier = [{"Epoch": entry.get("epoch"), "Step": entry["step"], "Training Loss": entry["loss"]}
               for entry in log_history if "loss" in entry and entry.get("step") not in logged]
    card_data.training_logs = sorted([*earlier, *card_data.training_logs], key=lambda row: row["Step"])
    card_data._training_start_time = time.time() - clock.seconds  # the card's clock: it has no public setter
