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

TEACHER_TYPES = ("cross-encoder", "bi-encoder", "fused")
BM25 = "bm25"


@dataclass
class ScoreArguments:
    """Options of ``st-tasb score``."""

    candidates: str = option(help=f"output folder of 'st-tasb mine' (its {PAIRS_FILE}) or a Parquet file of candidates")
    data: str = option(help="BEIR folder holding the query and passage texts")
    teachers: list[str] = option(  # noqa: RUF009 (option() makes a dataclass field)
        help="teacher model folder(s) or Hub id(s); several are averaged (an ensemble, like the paper's T2). "
        "Prefix one with cross-encoder: or bi-encoder: to override --teacher-type for it; bm25 is BM25 with the "
        "corpus's statistics; fused:MODEL fuses BM25 and the bi-encoder MODEL (--fusion-weight)",
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
    bm25_k1: float = option(1.5, help="k1 of the bm25 teacher and of the BM25 side of a fused: teacher")
    bm25_b: float = option(0.75, help="b of the bm25 teacher and of the BM25 side of a fused: teacher")
    fusion_weight: float | None = option(
        None, help="weight on BM25 in [0, 1] of a fused: teacher (required with one; choose it on dev, e.g. with "
        "benchmarks/teacher_quality.py); each side is min-max normalised per query first"
    )
    fusion_depth: int = option(100, help="a fused: teacher normalises each side per query between its best score of "
                               "the corpus (1) and its score at this rank (0)")


def parse_teacher(spec: str, default_type: str) -> tuple[str, str]:
    """Split ``"cross-encoder:PATH"`` / ``"bi-encoder:PATH"`` / ``"fused:PATH"`` / ``"PATH"`` into (type, model);
    ``"bm25"`` is ``("bm25", "")``.

    Raises:
        ValueError: for a prefix of another kind (``colbert:PATH``), naming the kinds st-tasb score takes.

    Example:
        >>> parse_teacher("bi-encoder:models/minilm", "cross-encoder"), parse_teacher("org/ce", "cross-encoder")
        (('bi-encoder', 'models/minilm'), ('cross-encoder', 'org/ce'))
        >>> parse_teacher("bm25", "cross-encoder"), parse_teacher("fused:models/minilm", "cross-encoder")
        (('bm25', ''), ('fused', 'models/minilm'))
        >>> parse_teacher("colbert:models/colbert", "cross-encoder")
        Traceback (most recent call last):
        ...
        ValueError: --teachers colbert:models/colbert: st-tasb score takes cross-encoder:, bi-encoder:, fused: and bm25 teachers, not colbert: (a ColBERT teaches in-batch: st-tasb train --inbatch-teacher colbert)
    """
    if spec == BM25:
        return BM25, ""
    kind, separator, model = spec.partition(":")
    if separator and kind in TEACHER_TYPES:
        return kind, model
    if separator and re.fullmatch(r"[a-z][a-z0-9_-]+", kind):  # a kind's prefix, not a path or a Hub id
        hint = {"colbert": " (a ColBERT teaches in-batch: st-tasb train --inbatch-teacher colbert)",
                BM25: " (bm25 takes no model: --teachers bm25 --bm25-k1 K1 --bm25-b B)"}.get(kind, "")
        raise ValueError(f"--teachers {spec}: st-tasb score takes {', '.join(f'{t}:' for t in TEACHER_TYPES)} and "
                         f"{BM25} teachers, not {kind}:{hint}")
    return default_type, spec


def run(args: ScoreArguments) -> int:
    """Score the candidates with the teacher(s), save the table and print its statistics."""
    from st_tasb.data.files import check_output
    from st_tasb.prepare.table import TABLE_RECORD

    check_output(args.output, "--output", record=TABLE_RECORD, overwrite=args.overwrite)  # before the work
    from st_tasb.data.beir import load_beir
    from st_tasb.data.files import writing
    from st_tasb.prepare.scoring import score_candidates

    pairs = _read_candidates(Path(args.candidates))
    data = load_beir(args.data, args.split)
    work_dir = Path(args.work_dir) if args.work_dir else Path(f"{args.output.rstrip('/')}.shards")
    table = score_candidates(
        _teacher(args, data, work_dir), pairs, data.queries, data.corpus, work_dir, batch_size=args.batch_size,
        shard_size=args.shard_size, scale=args.scale,
    )
    with writing(args.output, "teacher score table"):
        table.save(args.output)
    print(f"{table.stats()} -> {args.output}")
    return 0


def _read_candidates(candidates: Path) -> Any:
    """The mined (query, positive, negative) rows of ``--candidates`` (a folder of st-tasb mine, or its Parquet file).

    Raises:
        FileNotFoundError, ValueError, st_tasb.data.beir.DataFormatError: naming the file and what is wrong.
    """
    import pyarrow.parquet as pq
    from datasets import Dataset

    from st_tasb.data.beir import DataFormatError
    from st_tasb.data.files import reading

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
    return pairs


def _teacher(args: ScoreArguments, data: Any, work_dir: Path) -> Any:
    """The teacher of ``--teachers``: one model, BM25 or a fusion, or the mean of several (an ensemble)."""
    from st_tasb.data.models import (
        MODEL_KINDS,
        load_cross_encoder,
        load_sentence_transformer,
        model_folder_kind,
    )
    from st_tasb.teachers import (
        BiEncoderTeacher,
        BM25Teacher,
        CrossEncoderTeacher,
        EnsembleTeacher,
        FusedTeacher,
    )

    specs = [parse_teacher(spec, args.teacher_type) for spec in args.teachers]
    if any(kind == "fused" for kind, _ in specs) and (args.fusion_weight is None or not 0 <= args.fusion_weight <= 1):
        raise ValueError(f"--fusion-weight must be given with a fused: teacher, the weight on BM25 in [0, 1] (choose it "
                         f"on dev, e.g. with benchmarks/teacher_quality.py), not {args.fusion_weight}")
    bm25 = None
    if any(kind in (BM25, "fused") for kind, _ in specs):
        bm25 = BM25Teacher(data.corpus, k1=args.bm25_k1, b=args.bm25_b)
    teachers = []
    for kind, name in specs:
        if kind == BM25:
            teachers.append(bm25)
            continue
        found = model_folder_kind(name)
        if found is not None and found != ("bi-encoder" if kind == "fused" else kind):
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
            settings = {"similarity_fn_name": args.similarity, "query_max_length": None, "passage_max_length": None,
                        "batch_size": args.batch_size, "device": args.device, "dtype": "float32",
                        "name": f"bi-encoder:{name}:{args.similarity}"}
            if kind == "fused":
                folder = work_dir / f"embeddings-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"
                dense = _cached_bi_encoder(model, data, folder, settings)
                teachers.append(FusedTeacher(bm25, dense, bm25_weight=args.fusion_weight, depth=args.fusion_depth))
            else:
                teachers.append(BiEncoderTeacher(model, **settings))
    return teachers[0] if len(teachers) == 1 else EnsembleTeacher(teachers)


def _cached_bi_encoder(model: Any, data: Any, folder: Path, settings: dict[str, Any]) -> Any:
    """The bi-encoder side of a fused teacher with its embeddings of every query and passage: read from ``folder``
    when a finished cache is there, else encoded into it (complete or not at all, so a rerun resumes)."""
    import os
    import shutil

    from st_tasb.teachers import BiEncoderTeacher

    if not folder.is_dir():
        teacher = BiEncoderTeacher(model, **settings)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        teacher.build_cache(data.queries, data.corpus, path=partial)
        os.replace(partial, folder)  # the cache's memory maps stay valid
        return teacher
    teacher = BiEncoderTeacher(model, cache=folder, **settings)
    rows = (len(teacher.cache.queries), len(teacher.cache.corpus))
    if rows != (len(data.queries), len(data.corpus)):
        raise ValueError(f"{folder} holds embeddings of {rows[0]} queries and {rows[1]} passages, not of these "
                         f"{len(data.queries)} and {len(data.corpus)}: delete it or pick another --work-dir")
    return teacher


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
        "      --output teacher-scores\n"
        "  st-tasb score --candidates candidates --data squad --teachers fused:all-MiniLM-L6-v2 --similarity cosine \\\n"
        "      --fusion-weight 0.7 --output teacher-scores   # BM25 and MiniLM, min-max normalised per query"
    ),
    arguments=ScoreArguments,
    run=run,
)
