"""Checkpoints and the saved model: which checkpoint a run resumes from, whether one is complete, the record of
the settings the checkpoints belong to, and saving the trained model so that nothing half-written is left."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from sentence_transformers import SentenceTransformer

from st_tasb.data.files import reading, replacing_folder
from st_tasb.training.model_card import TASBModelCard
from st_tasb.training.settings import RESUMABLE_CHANGES, TrainingSettings

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
"""Subfolder of the output folder that holds Trainer checkpoints (never uploaded by ``st-tasb push``)."""
RUN_SETTINGS_FILE = "st_tasb_settings.json"
"""Written next to the checkpoints: the settings of the run they belong to (a resume must match them)."""


def record_settings(checkpoint_dir: Path, settings: TrainingSettings) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / RUN_SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")


def check_resume(checkpoint_dir: Path, resume: str | bool, settings: TrainingSettings) -> Path:
    """The checkpoint to resume from: the one given, else the latest complete one in ``checkpoint_dir`` (later ones
    that a killed run left incomplete are skipped, with a warning).

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
    for skipped in checkpoints[checkpoints.index(complete[-1]) + 1 :]:
        logger.warning("skipping checkpoint %s: it is %s; resuming from %s (the run writes that step again)",
                       skipped, problems[skipped], complete[-1].name)
    return complete[-1]


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a process killed while writing it), or None when it is complete.

    The Trainer writes a checkpoint's weights first and its ``trainer_state.json`` last: a checkpoint is complete
    when its weights open and its state file parses.
    """
    from safetensors import safe_open

    weights = list(checkpoint.glob("*.safetensors"))
    if not weights:
        return "incomplete (no model weights: the run stopped while writing it)"
    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own error type for a damaged file
            return f"damaged ({file.name}: {error})"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "incomplete (no complete trainer_state.json: the run stopped while writing it)"
    return None


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def save_model(student: SentenceTransformer, card: TASBModelCard, output_dir: Path) -> None:
    """Save the trained student and its card into ``output_dir``: first complete under a temporary name beside it,
    then moved in, so that a full disk or a crash while saving never leaves a half-written model under the name.

    Raises:
        OSError: naming ``output_dir`` and the cause (e.g. no space left), and where the last checkpoint is.
    """
    try:
        with replacing_folder(output_dir) as partial:
            student.save_pretrained(str(partial))
            card.save(partial)
    except OSError as error:
        checkpoints = sorted((output_dir / CHECKPOINTS_DIR).glob("checkpoint-*"), key=_step)
        kept = f"the last checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was kept (--save-steps)"
        raise OSError(error.errno, f"could not save the trained model to {output_dir} ({error.strerror or error}); "
                                   f"nothing of it was written there; {kept}") from error


def remove_unused(folders: list[Path]) -> None:
    """After a failed run: remove the folders it created that hold no checkpoint (only its settings record, if any),
    innermost first, so that a failure leaves no empty output behind."""
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.glob("checkpoint-*")):
            (folder / RUN_SETTINGS_FILE).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
