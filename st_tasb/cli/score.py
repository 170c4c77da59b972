"""``st-tasb score``: a teacher score table from mined candidates (resumable)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from st_tasb.cli.mine import PAIRS_FILE
from st_tasb.cli.options import Command, option

logger = logging.getLogger(__name__)

TEACHER_TYPES = ("cross-encoder", "bi-encoder")


@dataclass
class ScoreArguments:
    """Options of ``st-tasb score``."""

    candidates: str = option(help=f"output folder of 'st-tasb mine' (its {PAIRS_FILE}) or a Parquet file of candidates")
    data: str = option(help="BEIR folder holding the query and passage texts")
    teachers: list[str] = option(  # noqa: RUF009 (option() makes a dataclass field)
        help="teacher model folder(s) or Hub id(s); several are averaged (an ensemble, like the paper's T2). "
        "Prefix one with cross-encoder: or bi-encoder: to override --teacher-type for it",
        metavar="MODEL",
    )
    output: str = option(help="folder for the teacher score table (TeacherScoreTable.save)")
    overwrite: bool = option(False, help="write into an --output folder that holds files st-tasb did not write (they may be replaced)")
    split: str = option("train", help="qrels split of the BEIR folder (only its texts are used)")
    teacher_type: Literal["cross-encoder", "bi-encoder"] = option(
        "cross-encoder", help="how unprefixed --teachers are used"
    )
    similarity: Literal["dot", "cosine"] = option("dot", help="score of bi-encoder teachers")
    work_dir: str | None = option(
        None, help="folder of the finished score shards; rerun with the same one to resume (default: OUTPUT.shards)"
    )
    batch_size: int = option(32, help="teacher batch size")
    shard_size: int = option(50_000, help="(query, document) pairs per shard: the most work an interruption loses")
    scale: float = option(1.0, help="multiply every teacher score by this, e.g. 10 for a cosine bi-encoder teacher "
                          "of a dot-product student (the demo does); recorded in the table and the card")
    max_length: int | None = option(
        None, help="token cap of a cross-encoder's (query, passage) input, or of a bi-encoder's texts (default: the model's)"
    )
    device: str | None = option(None, help="cpu, cuda, ... (default: CUDA when available)")


def parse_teacher(spec: str, default_type: str) -> tuple[str, str]:
    """Split ``"cross-encoder:PATH"`` / ``"bi-encoder:PATH"`` / ``"PATH"`` into (type, model).

    Raises:
        ValueError: for a prefix of another kind (``colbert:PATH``), naming the kinds st-tasb score takes.

    Example:
        >>> parse_teacher("bi-encoder:models/minilm", "cross-encoder"), parse_teacher("org/ce", "cross-encoder")
        (('bi-encoder', 'models/minilm'), ('cross-encoder', 'org/ce'))
        >>> parse_teacher("colbert:models/colbert", "cross-encoder")
        Traceback (most recent call last):
        ...
        ValueError: --teachers colbert:models/colbert: st-tasb score takes cross-encoder: and bi-encoder: teachers, not colbert: (a ColBERT teaches in-batch: st-tasb train --inbatch-teacher colbert)
    """
    kind, separator, model = spec.partition(":")
    if separator and kind in TEACHER_TYPES:
        return kind, model
    if separator and re.fullmatch(r"[a-z][a-z0-9_-]+", kind):  # a kind's prefix, not a path or a Hub id
        hint = " (a ColBERT teaches in-batch: st-tasb train --inbatch-teacher colbert)" if kind == "colbert" else ""
        raise ValueError(f"--teachers {spec}: st-tasb score takes {' and '.join(f'{t}:' for t in TEACHER_TYPES)} teachers, "
                         f"not {kind}:{hint}")
    return default_type, spec


def run(args: ScoreArguments) -> int:
    """Score the candidates with the teacher(s), save the table and print its statistics."""
    from st_tasb.data.files import check_output_folder
    from st_tasb.prepare.table import TABLE_RECORD

    check_output_folder(args.output, TABLE_RECORD, "--output", overwrite=args.overwrite)  # before the work
    import pyarrow.parquet as pq
    from datasets import Dataset

    from st_tasb.data.beir import DataFormatError, load_beir
    from st_tasb.data.files import reading, writing
    from st_tasb.data.models import (
        MODEL_KINDS,
        load_cross_encoder,
        load_sentence_transformer,
        model_folder_kind,
    )
    from st_tasb.prepare.scoring import EnsembleScorer, score_candidates
    from st_tasb.teachers import BiEncoderTeacher, CrossEncoderTeacher

    candidates = Path(args.candidates)
    pairs_path = candidates / PAIRS_FILE if candidates.is_dir() else candidates
    if not pairs_path.is_file():
        raise FileNotFoundError(f"candidates not found: {pairs_path} (run st-tasb mine first)")
    if pairs_path.suffix != ".parquet":
        raise ValueError(f"{pairs_path}: candidates must be a Parquet file with query_id, positive_id, negative_id")
    with reading(pairs_path, "candidates file (st-tasb mine writes it)"):
        if pq.ParquetFile(pairs_path).metadata.num_rows == 0:  # datasets cannot open a Parquet file without rows
            raise DataFormatError(f"{pairs_path}: the candidates file has no rows: nothing to score (did st-tasb mine "
                                  "find pairs?)")
        pairs = Dataset.from_parquet(str(pairs_path))
    _check_candidates(pairs, pairs_path)
    data = load_beir(args.data, args.split)

    teachers = []
    for spec in args.teachers:
        kind, name = parse_teacher(spec, args.teacher_type)
        found = model_folder_kind(name)
        if found is not None and found != kind:
            remedy = f"give it as --teachers {found}:{name}" if found in ("bi-encoder", "cross-encoder") else (
                "st-tasb score takes cross-encoder and bi-encoder teachers")
            raise ValueError(f"{name} is {MODEL_KINDS[found]}, not a {kind}: {remedy}")
        if kind == "cross-encoder":
            model = load_cross_encoder(name, device=args.device, **({"max_length": args.max_length} if args.max_length else {}))
            teachers.append(
                CrossEncoderTeacher(model, max_length=None, batch_size=args.batch_size, device=args.device,
                                    dtype="float32", name=f"cross-encoder:{name}")
            )
        else:
            model = load_sentence_transformer(name, device=args.device)
            if args.max_length:
                model.max_seq_length = args.max_length
            teachers.append(
                BiEncoderTeacher(model, similarity_fn_name=args.similarity, query_max_length=None, passage_max_length=None,
                                 batch_size=args.batch_size, device=args.device, dtype="float32",
                                 name=f"bi-encoder:{name}:{args.similarity}")
            )
    teacher = teachers[0] if len(teachers) == 1 else EnsembleScorer(teachers)

    work_dir = Path(args.work_dir) if args.work_dir else Path(f"{args.output.rstrip('/')}.shards")
    table = score_candidates(
        teacher, pairs, data.queries, data.corpus, work_dir, batch_size=args.batch_size, shard_size=args.shard_size,
        scale=args.scale,
    )
    with writing(args.output, "teacher score table"):
        table.save(args.output)
    print(f"{table.stats()} -> {args.output}")
    return 0


def _check_candidates(pairs: Any, path: Path) -> None:
    """Name the candidates file when it lacks a column, or leaves an id empty (null or "")."""
    import pyarrow.compute as pc

    from st_tasb.data.arrow import rows
    from st_tasb.data.beir import DataFormatError

    columns = ("query_id", "positive_id", "negative_id")
    missing = [name for name in columns if name not in pairs.column_names]
    if missing:
        raise DataFormatError(f"{path}: candidates need the columns {list(columns)}; {missing} missing "
                              f"(found {pairs.column_names})")
    table = rows(pairs)
    for name in columns:
        empty = pc.or_kleene(pc.is_null(table.column(name)), pc.equal(pc.cast(table.column(name), "string"), ""))
        if pc.any(empty).as_py():
            row = int(pc.index(empty, True).as_py())
            raise DataFormatError(f"{path}: row {row} has no {name} (null or empty)")


COMMAND = Command(
    name="score",
    description=(
        "Score every distinct (query, passage) pair of the candidates with the teacher (the mean of several\n"
        "teachers for an ensemble) and save the TeacherScoreTable (query_id, positive_id, negative_id, margin,\n"
        "pos_score, neg_score). Scores are written to the work folder shard by shard as they finish: rerun the\n"
        "same command after an interruption and only the missing shards are computed.\n\n"
        "example:\n"
        "  st-tasb score --candidates candidates --data scifact --teachers cross-encoder:ce1 cross-encoder:ce2 \\\n"
        "      --output teacher-scores"
    ),
    arguments=ScoreArguments,
    run=run,
)
