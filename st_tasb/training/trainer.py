"""Training a student: one ``SentenceTransformerTrainer`` run wired with the parts of the settings' recipe.

:func:`train` takes a student, a teacher score table, the query and passage texts, the query clusters and an
in-batch teacher; the recipe's kind (:mod:`st_tasb.training.recipes`) builds the training dataset, the batch sampler
(topic-aware and balanced: ``TopicAwareBalancedBatchSampler``), the loss (with the recipe's terms: pairwise
Margin-MSE, the in-batch term, the contrastive term; each logged) and the collator, and the Trainer runs with the
settings' optimisation (:class:`TrainingSettings`; ``st-tasb train``'s default recipe is the paper's: Adam, lr 7e-6,
no weight decay, cosine schedule, batch size 32, alpha 0.75, 10 margin bins, one cluster per batch).

The final model is saved as a normal SentenceTransformer folder whose ``README.md`` carries a
TAS-Balanced section (:mod:`st_tasb.training.model_card`). Under ``accelerate launch`` / ``torchrun`` every
rank runs the same code; only the main process writes the model. Launching is in :mod:`~st_tasb.training.launch`,
checkpoints and saving in :mod:`~st_tasb.training.checkpoints`, the in-batch teacher in
:mod:`~st_tasb.training.inbatch_teachers`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments

from st_tasb.data.compat import BaseEvaluator
from st_tasb.data.progress import progress_enabled
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import HardMarginReport, TeacherScoreTable
from st_tasb.teachers import InBatchTeacher
from st_tasb.training.checkpoints import (
    CHECKPOINTS_DIR,
    TrainingClock,
    check_resume,
    checkpoints_kept,
    record_settings,
    remove_unused,
    restore_card_history,
    save_model,
)
from st_tasb.training.launch import (
    LaunchReport,
    global_batch,
    process_state,
    runs_on_cpu,
)
from st_tasb.training.model_card import TASBModelCard, attach_model_card
from st_tasb.training.recipes import KINDS, RunParts
from st_tasb.training.settings import RUN_ONLY_SETTINGS, TrainingSettings

logger = logging.getLogger(__name__)

TRAINING_LOG_FILE = "training_log.json"
"""The file of a run's log entries (:attr:`TrainingRun.log_history`: losses, learning rates and evaluations by step)."""


@dataclass
class TrainingRun:
    """The outcome of :func:`train`.

    Attributes:
        model: the trained student (also saved in ``model_dir``).
        model_dir: the saved SentenceTransformer folder.
        log_history: the Trainer's log entries (``loss``, ``pairwise``, ``in_batch``, ``learning_rate``, ``step``, ...).
        global_step: optimizer steps taken.
        card: the values of the model card's TAS-Balanced section.
        table: the pairs trained on (with ``min_margin``, the table without the pairs of smaller margin).
        parts: the dataset, batch sampler, loss and collator the run trained with (:class:`~st_tasb.training.recipes.RunParts`).
        settings: the settings of the run.
    """

    model: SentenceTransformer
    model_dir: Path
    log_history: list[dict[str, float]]
    global_step: int
    card: TASBModelCard = field(default_factory=TASBModelCard)
    table: TeacherScoreTable | None = None
    parts: RunParts | None = None
    settings: TrainingSettings = field(default_factory=TrainingSettings)


def train(
    student: SentenceTransformer,
    table: TeacherScoreTable,
    queries: TextStore,
    corpus: TextStore,
    output_dir: str | Path,
    *,
    clusters: QueryClusters | None = None,
    inbatch_teacher: InBatchTeacher | None = None,
    settings: TrainingSettings | None = None,
    card: TASBModelCard | None = None,
    callbacks: list[TrainerCallback] | None = None,
    evaluator: BaseEvaluator | None = None,
    resume_from_checkpoint: str | bool | None = None,
    local_files_only: bool | None = None,
) -> TrainingRun:
    """Train ``student`` with TAS-Balanced batches and the dual-teacher loss, and save it with its card.

    Args:
        student: the SentenceTransformer to train (dot-product scores; see :func:`st_tasb.training.student.make_student`).
        table: the pairwise teacher's scored (query, positive, negative) pairs.
        queries: the query texts (every query id of the table must be in it).
        corpus: the passage texts (every passage id of the table must be in it).
        output_dir: where the trained model is saved (a SentenceTransformer folder); checkpoints go to
            its ``checkpoints`` subfolder.
        clusters: the query clusters; needed unless ``settings.topic_aware`` is off.
        inbatch_teacher: the in-batch teacher (see :func:`build_inbatch_teacher`); ``None`` trains with
            the pairwise Margin-MSE term only (``alpha`` is then unused).
        settings: the hyper-parameters (default: :class:`TrainingSettings`, the paper's).
        card: values for the model card's TAS-Balanced section, e.g. ``teachers={"pairwise": ...}`` and
            ``data={...}``; settings, the in-batch teacher and data counts are filled in.
        callbacks: extra ``transformers`` trainer callbacks.
        evaluator: evaluates the student every ``settings.eval_steps`` steps (e.g. a
            :class:`~st_tasb.retrieval.evaluation.RetrievalEvaluator` on dev queries), keeping the best
            checkpoint and stopping early as the settings say; its metrics go into
            :attr:`TrainingRun.log_history` and sentence-transformers' card.
        resume_from_checkpoint: a checkpoint folder, or ``True`` for the latest one in ``output_dir/checkpoints``.
        local_files_only: keep the model card offline (no Hub look-ups); default: ``HF_HUB_OFFLINE``.

    Returns:
        A :class:`TrainingRun`.

    Raises:
        ValueError: if topic-aware batches are asked for without clusters, the table has fewer queries
            than a batch, or a setting is invalid; with ``resume_from_checkpoint``, before any work, if there is no
            complete checkpoint to resume from or the checkpoints belong to a run with other settings.
        st_tasb.data.texts.UnknownIdError: if the table names queries or passages missing from the texts.
    """
    settings = settings or TrainingSettings()
    output_dir = Path(output_dir)
    if resume_from_checkpoint:  # before any work: the checkpoint resumed from, or why there is none
        resume_from_checkpoint = str(check_resume(output_dir / CHECKPOINTS_DIR, resume_from_checkpoint, settings,
                                                  warn=process_state(settings.cpu).is_main_process))
    if clusters is None and settings.topic_aware:
        raise ValueError("topic-aware batches need query clusters (run st-tasb cluster), or turn topic_aware off")
    hard_margin = None
    if settings.min_margin is not None:
        table, hard_margin = table.drop_small_margins(settings.min_margin)
        (logger.warning if hard_margin.queries_emptied else logger.info)("hard margin: %s", hard_margin)
    kind = KINDS[settings.loss]
    parts = kind.parts(student, table, queries, corpus, clusters, inbatch_teacher, settings)
    if not kind.uses_teacher:
        inbatch_teacher = None  # the baseline learns from the labels alone
    student.similarity_fn_name = settings.similarity  # saved with the model: evaluated as trained
    if local_files_only is None:
        local_files_only = bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    student.model_card_data.local_files_only = local_files_only
    student.model_card_data.add_tags(["tas-balanced", "dense-retrieval"])

    checkpoint_dir = output_dir / CHECKPOINTS_DIR
    new_folders = [folder for folder in (output_dir, checkpoint_dir) if not folder.exists()]
    earlier_checkpoints = set(checkpoint_dir.glob("checkpoint-*"))
    clock = TrainingClock()
    trainer = SentenceTransformerTrainer(
        model=student,
        args=_training_arguments(settings, checkpoint_dir, parts.batch_sampler, evaluator),
        train_dataset=parts.dataset,
        loss=parts.loss,
        data_collator=parts.collator,
        callbacks=[*(callbacks or []), *_early_stopping(settings), LaunchReport(settings.gather_across_devices), clock],
        evaluator=evaluator,
    )
    try:
        if trainer.is_world_process_zero() and trainer.args.save_strategy != "no":  # checkpoints carry their settings
            record_settings(checkpoint_dir, settings)
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except BaseException as error:
        stopped_in = remove_unused(new_folders, checkpoint_dir, earlier_checkpoints)
        if stopped_in is not None and isinstance(error, Exception):  # a full disk while writing a checkpoint, say
            cause = getattr(error, "strerror", None) or " ".join(str(error).split())
            message = (f"could not write the checkpoint {stopped_in} ({cause}); the half-written checkpoint was removed; "
                       f"{checkpoints_kept(checkpoint_dir)}")
            raise (OSError(error.errno, message) if isinstance(error, OSError) else OSError(message)) from error
        raise

    card = _card(card, settings, table, hard_margin, clusters, inbatch_teacher, trainer)
    if trainer.is_world_process_zero():
        restore_card_history(student, trainer.state.log_history, clock)
        attach_model_card(student, card)
        try:
            save_model(student, card, output_dir)
        finally:  # the Trainer creates checkpoints/ even when it writes no checkpoint: not left empty
            remove_unused(new_folders, checkpoint_dir, earlier_checkpoints)
    return TrainingRun(model=student, model_dir=output_dir, log_history=list(trainer.state.log_history),
                       global_step=trainer.state.global_step, card=card, table=table, parts=parts, settings=settings)


def _early_stopping(settings: TrainingSettings) -> list[TrainerCallback]:
    if settings.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience)]


def _evaluation_arguments(settings: TrainingSettings, evaluator: BaseEvaluator | None) -> dict[str, Any]:
    """Evaluation and checkpointing: every ``eval_steps`` with an evaluator, keeping the best checkpoint if asked."""
    saving: dict[str, Any] = {"save_strategy": "steps" if settings.save_steps else "no", "save_steps": settings.save_steps or 500}
    if evaluator is None or not settings.eval_steps:
        return saving
    evaluation = {"eval_strategy": "steps", "eval_steps": settings.eval_steps}
    if not settings.keep_best_model:
        return {**saving, **evaluation}
    return {
        **evaluation,
        "save_strategy": "steps",
        "save_steps": settings.save_steps or settings.eval_steps,
        "load_best_model_at_end": True,
        "metric_for_best_model": f"eval_{evaluator.primary_metric}",
        "greater_is_better": getattr(evaluator, "greater_is_better", True),
    }


def _training_arguments(
    settings: TrainingSettings, checkpoint_dir: Path, batch_sampler: Any, evaluator: BaseEvaluator | None = None
) -> SentenceTransformerTrainingArguments:
    warmup: dict[str, Any] = {"warmup_steps": settings.warmup if settings.warmup < 1 else int(settings.warmup)}
    if settings.warmup < 1 and "warmup_ratio" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        warmup = {"warmup_ratio": settings.warmup}  # transformers 4 takes fractions as warmup_ratio
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps is not None else -1,
        lr_scheduler_type=settings.lr_scheduler,
        weight_decay=settings.weight_decay,
        fp16=settings.fp16,
        bf16=settings.bf16,
        seed=settings.seed,
        data_seed=settings.seed,
        batch_sampler=batch_sampler,
        dataloader_drop_last=True,
        dataloader_num_workers=settings.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available() and not runs_on_cpu(settings.cpu),
        logging_steps=settings.logging_steps if settings.logging_steps < 1 else int(settings.logging_steps),
        **_evaluation_arguments(settings, evaluator),
        report_to="none",
        disable_tqdm=not progress_enabled(),
        use_cpu=runs_on_cpu(settings.cpu),
        **warmup,
    )


def _card(
    card: TASBModelCard | None,
    settings: TrainingSettings,
    table: TeacherScoreTable,
    hard_margin: HardMarginReport | None,
    clusters: QueryClusters | None,
    teacher: InBatchTeacher | None,
    trainer: SentenceTransformerTrainer,
) -> TASBModelCard:
    """The card values: the caller's, plus the settings (the recipe's terms in words), the teachers, the data counts
    and how the run went (processes, global batch, passages per query, steps, epochs)."""
    card = dataclasses.replace(card) if card is not None else TASBModelCard()
    recorded = {name: value for name, value in dataclasses.asdict(settings).items() if name not in RUN_ONLY_SETTINGS}
    if clusters is not None and settings.topic_aware:
        recorded["k"] = clusters.settings.get("k")
        recorded["n_clusters"] = clusters.n_clusters
    kind = KINDS[settings.loss]
    card.teachers = {**kind.card(recorded, table, teacher), **(card.teachers if kind.uses_teacher else {})}
    args = trainer.args
    rows = args.per_device_train_batch_size * (args.world_size if settings.gather_across_devices else 1)
    recorded.update(
        steps=trainer.state.global_step, world_size=args.world_size, global_batch_size=global_batch(args),
        in_batch_passages_per_query=kind.in_batch_passages(rows), epochs_trained=round(float(trainer.state.epoch or 0), 4),
    )
    card.settings = {**recorded, **card.settings}
    card.data = {**card.data, "training pairs": len(table), "training queries": table.num_queries}
    if hard_margin is not None:
        card.data["hard margin"] = str(hard_margin)
    return card
