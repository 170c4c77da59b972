"""``st-tasb train``: training of a student by a recipe (TAS-Balanced's by default), flags overriding its settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from st_tasb.cli.options import Command, option
from st_tasb.training.settings import TrainingSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass(kw_only=True)
class TrainArguments(TrainingSettings):
    """Options of ``st-tasb train``: the data, the models, and the :class:`~st_tasb.training.settings.TrainingSettings`."""

    table: str = option(help="teacher score table folder (st-tasb score, or TeacherScoreTable.save)")
    data: str = option(help="BEIR folder holding the query and passage texts")
    output: str = option(help="folder of the trained model (a SentenceTransformer folder with its model card)")
    clusters: str | None = option(None, help="query clusters folder (st-tasb cluster); required unless --random-batches")
    split: str = option("train", help="qrels split of the BEIR folder (only its texts are used)")
    student: str = option(help="the student: a SentenceTransformer folder or Hub id, or the base cut by --student-layers")
    student_layers: str | None = option(
        None, help="cut --student: N keeps its first N transformer layers; a comma list of layer indices keeps those "
        "(e.g. 0,2,5: the demo's 3-layer cut of a 6-layer model)"
    )
    student_pooling: Literal["cls", "mean", "max"] | None = option(
        None, help="replace the student's pooling (the paper: cls); with --student-layers the default is cls"
    )
    max_seq_length: int | None = option(200, help="passage token cap of the student (the paper: 200)")
    inbatch_teacher: str = option(
        "none", help="in-batch teacher: none, bi-encoder (cached embeddings), colbert (the paper), cross-encoder, bm25 "
        "(BM25 with the corpus's statistics), fused (BM25 and the bi-encoder --inbatch-teacher-model, each normalised "
        "per query, weighted by --fusion-weight)"
    )
    inbatch_teacher_model: str | None = option(None, help="folder or Hub id of the in-batch teacher")
    fusion_weight: float | None = option(
        None, help="fused in-batch teacher: the weight on BM25, in [0, 1] (choose it on dev; st-tasb score takes the same)"
    )
    fusion_depth: int = option(100, help="fused in-batch teacher: the rank whose score is 0 in each side's normalisation")
    inbatch_cache: str | None = option(None, help="bi-encoder teacher: folder for its cached embeddings (reused when present)")
    inbatch_teacher_scale: float = option(
        1.0, help="bi-encoder and fused teachers: multiply their scores by this (e.g. 10 for cosine scores and a dot-product student; "
        "match st-tasb score --scale)"
    )
    resume: bool = option(False, help="resume from the latest checkpoint in OUTPUT/checkpoints")
    eval_data: str | None = option(
        None, help="BEIR folder of evaluation queries: nDCG@10 every --eval-steps (best model kept, --early-stopping-"
        "patience) and at the end, in the card"
    )
    eval_split: str = option("dev", help="qrels split of --eval-data")
    overwrite: bool = option(
        False, help="train into an --output folder that holds other files, a model trained earlier or the checkpoints "
        "of an unfinished run (all may be replaced)"
    )
    duplicates: Literal["error", "first", "mean"] = option(
        "error", help="a (query, positive, negative) pair listed twice in --table: error (naming its lines), or keep "
        "the first row, or one row with the mean scores"
    )


def run(args: TrainArguments) -> int:
    """Load the data, the student and the teachers, train, and save the model with its card.

    Raises:
        KeyboardInterrupt: on Ctrl-C, saying what is kept to resume from (the last checkpoint, or none).
    """
    from st_tasb.training.checkpoints import CHECKPOINTS_DIR, checkpoints_kept

    _check_output(Path(args.output), args.resume, args.overwrite)
    try:
        return _train(args)
    except KeyboardInterrupt:
        kept = checkpoints_kept(Path(args.output) / CHECKPOINTS_DIR)
        raise KeyboardInterrupt(f"{kept[0].upper()}{kept[1:]}.") from None


def _train(args: TrainArguments) -> int:
    """:func:`run` after the check of --output."""
    from st_tasb.data.beir import load_beir
    from st_tasb.data.files import write_json
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable
    from st_tasb.training.checkpoints import CHECKPOINTS_DIR, check_resume
    from st_tasb.training.inbatch_teachers import (
        build_inbatch_teacher,
        check_inbatch_teacher,
    )
    from st_tasb.training.launch import main_process_threads, process_state
    from st_tasb.training.model_card import TASBModelCard
    from st_tasb.training.recipes import KINDS
    from st_tasb.training.trainer import TRAINING_LOG_FILE, train

    check_inbatch_teacher(args.inbatch_teacher, args.inbatch_teacher_model, scale=args.inbatch_teacher_scale,
                          fusion_weight=args.fusion_weight)
    if not KINDS[args.loss].uses_teacher and args.inbatch_teacher != "none":
        raise ValueError(f"--recipe {args.recipe} (--loss {args.loss}) learns from the labels alone: drop "
                         "--inbatch-teacher, or train with a recipe that has a teacher")
    if args.clusters is None and args.topic_aware:
        raise ValueError("topic-aware batches need --clusters (a folder written by st-tasb cluster), or --random-batches")
    device = "cpu" if args.cpu else None
    state = process_state(args.cpu)
    settings = TrainingSettings.of(args)
    resume = (check_resume(Path(args.output) / CHECKPOINTS_DIR, True, settings, warn=state.is_main_process)
              if args.resume else None)  # before the work: a checkpoint of this run's settings to resume from
    data = load_beir(args.data, args.split)
    table = TeacherScoreTable.load(args.table)
    if args.duplicates != "error":
        table = table.deduplicate(args.duplicates)
    clusters = QueryClusters.load(args.clusters) if args.clusters else None
    evaluator = None
    if args.eval_data:
        from st_tasb.retrieval.evaluation import RetrievalEvaluator

        evaluator = RetrievalEvaluator.from_beir(load_beir(args.eval_data, args.eval_split), name=args.eval_split)
    elif args.eval_steps or args.early_stopping_patience:
        raise ValueError("--eval-steps and --early-stopping-patience need --eval-data (a BEIR folder to evaluate on)")
    student = _student(args, device)
    with state.main_process_first(), main_process_threads(state):  # one process writes the teacher cache
        teacher = build_inbatch_teacher(
            args.inbatch_teacher, args.inbatch_teacher_model, queries=data.queries, corpus=data.corpus,
            cache_dir=args.inbatch_cache, device=device, scale=args.inbatch_teacher_scale,
            fusion_weight=args.fusion_weight, fusion_depth=args.fusion_depth,
        )
    scaled = f", scores x {args.inbatch_teacher_scale:g}" if args.inbatch_teacher_scale != 1 else ""
    fused = f", weight {args.fusion_weight:g} on BM25" if args.fusion_weight is not None else ""
    described = " ".join(part for part in (args.inbatch_teacher, args.inbatch_teacher_model) if part)
    card = TASBModelCard(  # the pairwise teacher is described from the table's own record
        teachers={"in-batch": f"{described}{fused}{scaled}"} if teacher is not None else {},
        data={"teacher score table": args.table, "texts": f"{args.data}", "student": args.student},
    )
    result = train(
        student, table, data.queries, data.corpus, args.output, clusters=clusters, inbatch_teacher=teacher,
        settings=settings, card=card, resume_from_checkpoint=str(resume) if resume else None,
        evaluator=evaluator,
    )
    if state.is_main_process:
        write_json(Path(result.model_dir) / TRAINING_LOG_FILE, result.log_history)  # losses and dev curve, for plots
        if evaluator is not None:  # the final model (the best one, when kept)
            from st_tasb.retrieval.metrics import METRICS
            from st_tasb.training.model_card import add_evaluation

            metrics = evaluator(result.model)
            add_evaluation(result.model_dir, args.eval_split, {m: metrics[f"{args.eval_split}_{m}"] for m in METRICS})
            print(json.dumps({args.eval_split: {m: round(metrics[f"{args.eval_split}_{m}"], 4) for m in METRICS}}))
        print(f"trained {result.global_step} steps -> {result.model_dir}")
    return 0


def _student(args: TrainArguments, device: str | None) -> SentenceTransformer:
    """The student of --student: loaded as it is, or cut by --student-layers / re-pooled by --student-pooling."""
    from st_tasb.data.models import load_sentence_transformer
    from st_tasb.training.student import make_student

    if args.student_layers is None and args.student_pooling is None:
        student = load_sentence_transformer(args.student, device=device)
        if args.max_seq_length is not None:
            student.max_seq_length = args.max_seq_length
        return student
    layers = student_layers(args.student_layers)
    try:
        return make_student(args.student, num_layers=layers, pooling=args.student_pooling or "cls",
                            max_seq_length=args.max_seq_length, device=device)
    except ValueError as error:  # make_student names its Python argument
        raise ValueError(f"--student-layers {str(error).removeprefix('num_layers ')}") from None


def student_layers(text: str | None) -> int | list[int] | None:
    """The layers that ``--student-layers`` keeps: a count, or the indices of a comma list.

    Raises:
        ValueError: for anything else, naming the flag.

    Example:
        >>> student_layers("3"), student_layers("0,2,5"), student_layers(None)
        (3, [0, 2, 5], None)
    """
    if text is None:
        return None
    parts = [part.strip() for part in str(text).split(",")]
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"--student-layers takes a number of layers or a comma list of layer indices (0,2,5), not {text!r}")
    return int(parts[0]) if len(parts) == 1 else [int(part) for part in parts]


def _check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an --output that would replace something of the user's without being asked: a folder of other files,
    a model trained there before, or the checkpoints of an unfinished run (which --resume continues)."""
    from st_tasb.data.files import check_output
    from st_tasb.training.checkpoints import CHECKPOINTS_DIR
    from st_tasb.training.model_card import CARD_DATA_FILE

    if overwrite or not output.is_dir():
        check_output(output, "--output", overwrite=overwrite)
        return
    checkpoints = sorted(p.name for p in (output / CHECKPOINTS_DIR).glob("checkpoint-*")) if not resume else []
    if checkpoints:
        raise FileExistsError(
            f"--output {output} holds the checkpoints of an unfinished run (latest: {checkpoints[-1]}): add --resume to "
            "continue it, or --overwrite to train from the start (its checkpoints will be replaced)"
        )
    if (output / CARD_DATA_FILE).is_file() and not resume:
        raise FileExistsError(
            f"--output {output} holds a model trained earlier ({CARD_DATA_FILE} records its settings): choose another "
            "--output, or add --overwrite to replace it"
        )
    record = CHECKPOINTS_DIR if (output / CHECKPOINTS_DIR).is_dir() else CARD_DATA_FILE
    check_output(output, "--output", record=record)


COMMAND = Command(
    name="train",
    description=(
        "Train a dense retriever by a recipe (--recipe; flags override its settings). The default, paper, is\n"
        "TAS-Balanced as published: every batch holds the queries of one topic cluster, each with a (positive,\n"
        "negative) pair drawn evenly over its teacher-margin bins, and the loss is pairwise Margin-MSE on the\n"
        "table's margins plus alpha times in-batch Margin-MSE against the in-batch teacher (batch 32, lr 7e-6,\n"
        "cosine schedule, alpha 0.75, 10 bins, 1 cluster per batch). st-tasb: in-batch KL distillation plus a\n"
        "contrastive term on the labels, cosine x 20 student; mnrl, mnrl-topic: the baselines without a teacher.\n"
        "Runs on CPU or CUDA. Several processes (the log's first line says how many, and the card records the\n"
        "world size and global batch):\n"
        "  GPUs:  accelerate launch --multi_gpu --num_processes N -m st_tasb train ...  (or torchrun --nproc_per_node N)\n"
        "  CPU:   torchrun --nproc_per_node N -m st_tasb train ... --cpu  (gloo; accelerate launch --multi_gpu\n"
        "         --num_processes N works too, but accelerate launch --cpu runs a single process)\n\n"
        "example:\n"
        "  st-tasb train --table teacher-scores --clusters clusters --data scifact --student distilbert-base-uncased \\\n"
        "      --student-pooling cls --inbatch-teacher colbert --inbatch-teacher-model PATH --output tasb-model"
    ),
    arguments=TrainArguments,
    run=run,
)
