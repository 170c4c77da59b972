"""Training a TAS-Balanced student: one ``SentenceTransformerTrainer`` run wired with the st-tasb parts.

:func:`train` takes a student, a teacher score table, the query and passage texts, the query clusters
and an in-batch teacher, and runs the Trainer with

- the training dataset of the table (:func:`~st_tasb.training.dataset.build_training_dataset`, with
  row indices so that cached and precomputed in-batch teachers can look their scores up);
- ``batch_sampler=functools.partial(TopicAwareBalancedBatchSampler, n_bins=..., clusters_per_batch=...,
  topic_aware=..., balanced=...)``;
- :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` (or its GradCache variant for large batches),
  whose ``pairwise`` and ``in_batch`` components are logged;
- ``data_collator=TASBDataCollator.for_model(student)``;
- the paper's optimisation settings by default (:class:`TrainingSettings`: Adam, lr 7e-6, no weight
  decay, cosine schedule, batch size 32, alpha 0.75, 10 margin bins, one cluster per batch).

The final model is saved as a normal SentenceTransformer folder whose ``README.md`` carries a
TAS-Balanced section (:mod:`st_tasb.training.model_card`). Under ``accelerate launch`` / ``torchrun`` every
rank runs the same code; only the main process writes the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import huggingface_hub.constants
import torch
from accelerate import PartialState
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments

from st_tasb.data.compat import BaseEvaluator, MultipleNegativesRankingLoss, NoDuplicatesBatchSampler
from st_tasb.data.files import reading, replacing_folder
from st_tasb.data.models import load_cross_encoder, load_sentence_transformer
from st_tasb.data.progress import progress_enabled
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import HardMarginReport, TeacherScoreTable
from st_tasb.teachers import (
    BiEncoderTeacher,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    InBatchTeacher,
)
from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
from st_tasb.training.collator import TASBDataCollator
from st_tasb.training.dataset import build_pair_dataset, build_training_dataset
from st_tasb.training.losses import SIMILARITIES, DualTeacherMarginMSELoss, ScaledSimilarity
from st_tasb.training.model_card import TASBModelCard, attach_model_card
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler
from st_tasb.training.settings import TrainingSettings

logger = logging.getLogger(__name__)

InBatchTeacherKind = Literal["none", "bi-encoder", "colbert", "cross-encoder"]
CHECKPOINTS_DIR = "checkpoints"
"""Subfolder of the output folder that holds Trainer checkpoints (never uploaded by ``st-tasb push``)."""


def runs_on_cpu(cpu: bool = False) -> bool:
    """Whether training runs on the CPU: when asked (``cpu``), or when several processes were launched
    (``torchrun`` / ``accelerate launch``: ``WORLD_SIZE`` > 1) on a machine without CUDA.

    accelerate and transformers set up gloo DDP only for runs declared to be on the CPU; without that
    declaration every process of a CPU launch would train alone on the whole dataset.
    """
    return cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def process_state(cpu: bool = False) -> PartialState:
    """The accelerate process state of this run (distributed when launched so, CPU runs included), for
    ``main_process_first()`` and ``is_main_process`` before the Trainer exists."""
    return PartialState(cpu=runs_on_cpu(cpu))


@dataclass
class TrainingRun:
    """The outcome of :func:`train`.

    Attributes:
        model: the trained student (also saved in ``model_dir``).
        model_dir: the saved SentenceTransformer folder.
        log_history: the Trainer's log entries (``loss``, ``pairwise``, ``in_batch``, ``learning_rate``, ``step``, ...).
        global_step: optimizer steps taken.
        card: the values of the model card's TAS-Balanced section.
    """

    model: SentenceTransformer
    model_dir: Path
    log_history: list[dict[str, float]]
    global_step: int
    card: TASBModelCard = field(default_factory=TASBModelCard)


def build_inbatch_teacher(
    kind: InBatchTeacherKind,
    model: str | None,
    *,
    queries: TextStore | None = None,
    corpus: TextStore | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    scale: float = 1.0,
    show_progress_bar: bool = True,
) -> InBatchTeacher | None:
    """Load the in-batch teacher named on the command line.

    Args:
        kind: ``"none"`` (pairwise Margin-MSE only), ``"bi-encoder"`` (a SentenceTransformer whose
            embeddings of all queries and passages are computed once and cached: nearly free),
            ``"colbert"`` (the paper's choice) or ``"cross-encoder"`` (exact but slow).
        model: path or Hub id of the teacher model (not needed for ``"none"``).
        queries: the training queries (bi-encoder: the cache is aligned with them).
        corpus: the training passages (bi-encoder).
        cache_dir: bi-encoder only: keep the cached embeddings in this folder (memory-mapped); a folder
            written earlier for the same stores is reused.
        device: where the teacher runs (default: CUDA when available).
        scale: bi-encoder only: factor on its scores (e.g. 10 for cosine scores and a dot-product student).
        show_progress_bar: show the caching progress.

    Returns:
        The teacher, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown kind, a missing model, a bi-encoder without the stores, or a cache
            whose rows do not match the stores.
        FileNotFoundError, st_tasb.data.models.ModelLoadError: if the model cannot be found.
    """
    if kind == "none":
        return None
    if scale != 1 and kind != "bi-encoder":
        raise ValueError(f"only the bi-encoder in-batch teacher takes a scale, not the {kind} one")
    if kind not in ("bi-encoder", "colbert", "cross-encoder"):
        raise ValueError(f"unknown in-batch teacher {kind!r}; choose none, bi-encoder, colbert or cross-encoder")
    if not model:
        raise ValueError(f"the {kind} in-batch teacher needs a model (--inbatch-teacher-model PATH)")
    if kind == "colbert":
        return ColBERTTeacher(model, device=device)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(load_cross_encoder(model, device=device), device=device)
    if queries is None or corpus is None:
        raise ValueError("a bi-encoder in-batch teacher needs the queries and corpus to cache their embeddings")
    teacher = BiEncoderTeacher(load_sentence_transformer(model, device=device), device=device, scale=scale)
    cached_embeddings(teacher, queries, corpus, cache_dir, show_progress_bar=show_progress_bar)
    return teacher


def cached_embeddings(
    teacher: BiEncoderTeacher,
    queries: TextStore,
    corpus: TextStore,
    cache_dir: str | Path | None,
    *,
    show_progress_bar: bool = True,
) -> EmbeddingCache:
    """Give ``teacher`` the embeddings of all queries and passages: read from ``cache_dir`` if written there
    before, else encoded (and written there). Delete the folder when the model or the texts change.

    Returns:
        The cache, also set as ``teacher.cache``.

    Raises:
        ValueError: if the cache in ``cache_dir`` has other row counts than ``queries`` and ``corpus``.
    """
    if cache_dir is None or not (Path(cache_dir) / "corpus.npy").is_file():
        return teacher.build_cache(queries, corpus, path=cache_dir, show_progress_bar=show_progress_bar)
    cache = EmbeddingCache.load(cache_dir)
    if len(cache.queries) != len(queries) or len(cache.corpus) != len(corpus):
        raise ValueError(
            f"the embedding cache {cache_dir} has {len(cache.queries)} queries and {len(cache.corpus)} passages, "
            f"but the data has {len(queries)} and {len(corpus)}: delete it or choose another cache folder"
        )
    teacher.cache = cache
    logger.info("reusing the teacher embeddings cached in %s", cache_dir)
    return cache


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
            :class:`~st_tasb.retrieval.evaluator.RetrievalEvaluator` on dev queries), keeping the best
            checkpoint and stopping early as the settings say; its metrics go into
            :attr:`TrainingRun.log_history` and sentence-transformers' card.
        resume_from_checkpoint: a checkpoint folder, or ``True`` for the latest one in ``output_dir/checkpoints``.
        local_files_only: keep the model card offline (no Hub look-ups); default: ``HF_HUB_OFFLINE``.

    Returns:
        A :class:`TrainingRun`.

    Raises:
        ValueError: if topic-aware batches are asked for without clusters, the table has fewer queries
            than a batch, or a setting is invalid.
        st_tasb.data.texts.UnknownIdError: if the table names queries or passages missing from the texts.
    """
    settings = settings or TrainingSettings()
    output_dir = Path(output_dir)
    if clusters is None and settings.topic_aware:
        raise ValueError("topic-aware batches need query clusters (run st-tasb cluster), or turn topic_aware off")
    hard_margin = None
    if settings.min_margin is not None:
        table, hard_margin = table.drop_small_margins(settings.min_margin)
        (logger.warning if hard_margin.queries_emptied else logger.info)("hard margin: %s", hard_margin)
    topic_clusters = clusters if settings.topic_aware else None
    if settings.loss == "mnrl":
        dataset, topics = build_pair_dataset(table, queries, corpus, topic_clusters)
        inbatch_teacher = None  # the baseline learns from the labels alone
        batch_sampler: Any = pair_batch_sampler(topics)
        loss: torch.nn.Module = MultipleNegativesRankingLoss(student, **_mnrl_similarity(settings),
                                                             gather_across_devices=settings.gather_across_devices)
        collator = None
    else:
        dataset = build_training_dataset(table, queries, corpus, topic_clusters, with_indices=True)
        batch_sampler = partial(TopicAwareBalancedBatchSampler, **settings.sampler_kwargs())
        loss = _loss(student, inbatch_teacher, settings)
        collator = TASBDataCollator.for_model(student)
    student.similarity_fn_name = settings.student_similarity()[0]  # saved with the model: evaluated as trained

    if local_files_only is None:
        local_files_only = bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    student.model_card_data.local_files_only = local_files_only
    student.model_card_data.add_tags(["tas-balanced", "dense-retrieval"])

    new_folders = [folder for folder in (output_dir, output_dir / CHECKPOINTS_DIR) if not folder.exists()]
    trainer = SentenceTransformerTrainer(
        model=student,
        args=_training_arguments(settings, output_dir / CHECKPOINTS_DIR, batch_sampler, evaluator),
        train_dataset=dataset,
        loss=loss,
        data_collator=collator,
        callbacks=[*(callbacks or []), *_early_stopping(settings), LaunchReport(settings.gather_across_devices)],
        evaluator=evaluator,
    )
    if resume_from_checkpoint:
        resume_from_checkpoint = str(_check_resume(output_dir / CHECKPOINTS_DIR, resume_from_checkpoint, settings))
    if trainer.is_world_process_zero() and trainer.args.save_strategy != "no":  # checkpoints carry their settings
        _record_settings(output_dir / CHECKPOINTS_DIR, settings)
    try:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except BaseException:
        _remove_unused(new_folders)
        raise

    card = _card(card, settings, table, hard_margin, clusters, inbatch_teacher, trainer.state.global_step)
    card.settings.update(
        world_size=trainer.args.world_size, global_batch_size=_global_batch(trainer.args),
        in_batch_passages_per_query=_in_batch_passages(trainer.args, settings),
        epochs_trained=round(float(trainer.state.epoch or 0), 4),
    )
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        attach_model_card(student, card)
        save_model(student, card, output_dir)
        checkpoint_dir = output_dir / CHECKPOINTS_DIR
        if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
            checkpoint_dir.rmdir()  # the Trainer creates it even when it writes no checkpoint
    return TrainingRun(
        model=student,
        model_dir=output_dir,
        log_history=list(trainer.state.log_history),
        global_step=trainer.state.global_step,
        card=card,
    )


def pair_batch_sampler(topics: dict[str, int] | None) -> Any:
    """The batch sampler (a class or partial, for the training arguments) of the mnrl loss's (anchor, positive) rows:
    topic-aware with each anchor's cluster (:func:`~st_tasb.training.dataset.build_pair_dataset`), else random
    batches with no text twice (sentence-transformers' ``NoDuplicatesBatchSampler``)."""
    return partial(TopicAwareBatchSampler, clusters=topics) if topics else NoDuplicatesBatchSampler


def _loss(
    student: SentenceTransformer, teacher: InBatchTeacher | None, settings: TrainingSettings
) -> DualTeacherMarginMSELoss:
    terms = {
        "alpha": settings.alpha if teacher is not None else 0.0,
        "similarity_fct": ScaledSimilarity(*settings.student_similarity()),
        "inbatch_loss": settings.inbatch_loss,
        "contrastive_weight": settings.contrastive_weight,
        "pairwise_weight": settings.pairwise_weight,
        "gather_across_devices": settings.gather_across_devices,
    }
    if settings.gradcache_mini_batch_size is None:
        return DualTeacherMarginMSELoss(student, teacher, **terms)
    from st_tasb.training.cached_losses import CachedDualTeacherMarginMSELoss

    return CachedDualTeacherMarginMSELoss(student, teacher, mini_batch_size=settings.gradcache_mini_batch_size, **terms)


def _mnrl_similarity(settings: TrainingSettings) -> dict[str, Any]:
    """MultipleNegativesRankingLoss's score function and scale, as the settings give them."""
    if settings.gradcache_mini_batch_size is not None:
        raise ValueError("gradcache_mini_batch_size is for the tas-b loss; for mnrl use sentence-transformers' "
                         "CachedMultipleNegativesRankingLoss in your own Trainer")
    name, scale = settings.student_similarity()
    return {"similarity_fct": SIMILARITIES[name], "scale": scale}


RUN_SETTINGS_FILE = "st_tasb_settings.json"
"""Written next to the checkpoints: the settings of the run they belong to (a resume must match them)."""
_NOT_COMPARED = ("cpu", "dataloader_workers", "logging_steps", "save_steps", "eval_steps", "early_stopping_patience",
                 "keep_best_model", "max_steps", "epochs")  # may change between a run and its resumption


def _record_settings(checkpoint_dir: Path, settings: TrainingSettings) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / RUN_SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")


def _check_resume(checkpoint_dir: Path, resume: str | bool, settings: TrainingSettings) -> Path:
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
            if name not in _NOT_COMPARED and recorded.get(name, value) != value
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


def _remove_unused(folders: list[Path]) -> None:
    """After a failed run: remove the folders it created that hold no checkpoint (only its settings record, if any),
    innermost first, so that a failure leaves no empty output behind."""
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.glob("checkpoint-*")):
            (folder / RUN_SETTINGS_FILE).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()


def _global_batch(args: TrainingArguments) -> int:
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


def _in_batch_passages(args: TrainingArguments, settings: TrainingSettings) -> int:
    """How many passages each query is scored against in its batch: the positives and negatives of the global batch
    when gathering across processes, else of its own device's batch (mnrl: positives only)."""
    rows = args.per_device_train_batch_size * (args.world_size if settings.gather_across_devices else 1)
    return rows if settings.loss == "mnrl" else 2 * rows


class LaunchReport(TrainerCallback):
    """Logs, once per run on the main process, how training runs: processes, backend, device, batch sizes, steps.

    Started by ``accelerate launch`` through its single-process launcher (``--cpu``, or no GPU without
    ``--multi_gpu``), a run has one process whatever ``--num_processes`` said; that is warned about.
    """

    def __init__(self, gather_across_devices: bool = False) -> None:
        self.in_batch = "gathered from every process" if gather_across_devices else "per device (not gathered)"

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        backend = getattr(args.distributed_state, "backend", None) or "none"
        logger.info(
            "training on %d process(es) (backend %s, device %s): %d queries per device, global batch %d, %d steps, "
            "%g epochs; in-batch negatives %s", args.world_size, backend, args.device, args.per_device_train_batch_size,
            _global_batch(args), state.max_steps, args.num_train_epochs if args.max_steps <= 0 else state.num_train_epochs,
            self.in_batch if args.world_size > 1 else "of the batch",
        )
        if args.world_size == 1 and "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
            logger.warning(
                "accelerate launch started ONE process: its single-process launcher ignores --num_processes. "
                "For N processes on CPU (gloo) use 'accelerate launch --multi_gpu --num_processes N' (it runs CPU "
                "processes without a GPU) or 'torchrun --nproc_per_node N -m st_tasb train ... --cpu'"
            )


@contextmanager
def main_process_threads(state: PartialState) -> Iterator[None]:
    """Under a launcher, give the main process all CPU threads while it works alone (the others wait)."""
    if state.num_processes == 1 or not state.is_main_process:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    steps: int,
) -> TASBModelCard:
    """The card values: the caller's, plus the settings, the in-batch teacher and the data counts."""
    card = dataclasses.replace(card) if card is not None else TASBModelCard()
    recorded = dataclasses.asdict(settings)
    for name in ("cpu", "dataloader_workers", "logging_steps", "save_steps", "eval_steps", "early_stopping_patience",
                 "keep_best_model"):
        recorded.pop(name)
    if teacher is None:
        recorded["alpha"] = None
    if clusters is not None and settings.topic_aware:
        recorded["k"] = clusters.settings.get("k")
        recorded["n_clusters"] = clusters.n_clusters
    if settings.loss == "mnrl":
        recorded.update(alpha=None, n_bins=None, balanced=None, inbatch_loss=None, contrastive_weight=None,
                        pairwise_weight=None)
        card.teachers = {"none": "loss mnrl learns from the table's (query, positive) rows alone"}
    else:
        card.teachers = {
            "pairwise": _describe_table_teacher(table),
            "in-batch": _describe_teacher(teacher),
            **card.teachers,
        }
    recorded["similarity"], recorded["similarity_scale"] = settings.student_similarity()
    recorded["steps"] = steps
    card.settings = {**recorded, **card.settings}

    n_queries = table.num_queries
    card.data = {**card.data, "training pairs": len(table), "training queries": n_queries}
    if hard_margin is not None:
        card.data["hard margin"] = str(hard_margin)
    return card


def _describe_table_teacher(table: TeacherScoreTable) -> str:
    """The pairwise teacher as the table records it (st-tasb score), with its scale."""
    name, scale = table.teacher.get("name"), table.teacher.get("scale", 1)
    if not name:
        return "precomputed teacher margins of the training table"
    return f"{name}" + (f", scores x {scale:g}" if scale != 1 else "")


def _describe_teacher(teacher: InBatchTeacher | None) -> str:
    if teacher is None:
        return "none (pairwise Margin-MSE only)"
    config = ", ".join(f"{key}={value}" for key, value in teacher.get_config_dict().items())
    return f"{type(teacher).__name__}({config})"
