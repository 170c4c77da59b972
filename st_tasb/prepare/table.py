"""Teacher-scored training pairs, ``(query, positive, negative, margin)``, as a memory-mapped Arrow table.

A :class:`TeacherScoreTable` holds one row per training pair: ``query_id``, ``positive_id``,
``negative_id``, the teacher ``margin`` = score(query, positive) - score(query, negative) (float32),
and, when the teacher's two scores are known, ``pos_score`` and ``neg_score`` (float32). It is
built from the original MS MARCO teacher file (:meth:`TeacherScoreTable.from_tsv`), from a
``datasets.Dataset`` such as the Hub subset ``sentence-transformers/msmarco``,
``bert-ensemble-margin-mse`` (:meth:`TeacherScoreTable.from_dataset`), or from arrays
(:meth:`TeacherScoreTable.from_scores`, :meth:`TeacherScoreTable.from_margins`). Everything is
vectorised Arrow/numpy, so the 40M pairs of MS MARCO load in seconds and stay on disk, memory-mapped.

Ids of one kind (queries; passages, i.e. positives and negatives together) are ``int64`` when all
of them are integers, and strings otherwise.

Example:
    >>> table = TeacherScoreTable.from_scores(
    ...     query_ids=[1, 1, 2], positive_ids=[10, 10, 20], negative_ids=[11, 12, 21],
    ...     pos_scores=[9.5, 9.5, 7.0], neg_scores=[2.0, 8.5, 7.5])
    >>> len(table), table.num_queries
    (3, 2)
    >>> table.dataset["margin"][:]
    [7.5, 1.0, -0.5]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from datasets import Dataset, load_from_disk
from datasets import config as datasets_config
from datasets.fingerprint import generate_random_fingerprint
from tqdm.auto import tqdm

from st_tasb.data.arrow import rows
from st_tasb.data.checks import check_number
from st_tasb.data.files import CorruptFileError, reading, replacing_folder
from st_tasb.data.progress import progress_enabled
from st_tasb.data.text_files import DataFormatError, number_field, read_text, text_lines
from st_tasb.data.texts import TextStore, UnknownIdError

if TYPE_CHECKING:
    pass

ArrayLike = Union[pa.Array, pa.ChunkedArray, np.ndarray, Sequence[Any]]

ID_COLUMNS = ("query_id", "positive_id", "negative_id")
SCORE_COLUMNS = ("pos_score", "neg_score")
TSV_COLUMNS = ("pos_score", "neg_score", "query_id", "positive_id", "negative_id")
"""Field order of the original MS MARCO teacher file (tab-separated, no header)."""

TABLE_RECORD = "teacher_score_table.json"
"""The file :meth:`TeacherScoreTable.save` writes beside the Arrow data: what a folder of st-tasb's holds."""
_CACHE_VERSION = "1"  # part of the cache key: bump when the parsed layout changes
_SNIFF_LINES = 1000
_BLOCK_SIZE = 4 << 20
_MAX_EXAMPLES = 5
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")  # canonical integers that fit int64


@dataclass(frozen=True)
class TableStats:
    """Summary of a :class:`TeacherScoreTable`, see :meth:`TeacherScoreTable.stats`."""

    rows: int
    queries: int
    pairs_per_query_min: int
    pairs_per_query_median: float
    pairs_per_query_max: int
    margin_min: float
    margin_mean: float
    margin_max: float

    def __str__(self) -> str:
        return (
            f"{self.rows:,} pairs over {self.queries:,} queries; pairs per query "
            f"min {self.pairs_per_query_min} / median {self.pairs_per_query_median:g} / "
            f"max {self.pairs_per_query_max}; "
            f"margin min {self.margin_min:.4g} / mean {self.margin_mean:.4g} / max {self.margin_max:.4g}"
        )


@dataclass(frozen=True)
class HardMarginReport:
    """What :meth:`TeacherScoreTable.drop_small_margins` removed.

    Attributes:
        min_margin: the threshold: pairs with a teacher margin below it were removed.
        pairs_before: pairs of the table before.
        pairs_removed: pairs removed.
        queries_before: queries of the table before.
        queries_touched: queries that lost at least one pair.
        queries_emptied: queries that lost every pair, and so leave training.
        emptied_examples: up to five ids of those queries.
    """

    min_margin: float
    pairs_before: int
    pairs_removed: int
    queries_before: int
    queries_touched: int
    queries_emptied: int
    emptied_examples: tuple[Any, ...] = ()

    def __str__(self) -> str:
        text = (
            f"min_margin {self.min_margin:g} removed {self.pairs_removed:,} of {self.pairs_before:,} pairs "
            f"({self.pairs_removed / max(self.pairs_before, 1):.1%}), from {self.queries_touched:,} of "
            f"{self.queries_before:,} queries"
        )
        if self.queries_emptied:
            text += (
                f"; {self.queries_emptied:,} queries lost every pair and leave training, e.g. "
                f"{', '.join(map(repr, self.emptied_examples))}"
            )
        return text


class TeacherScoreTable:
    """Teacher-scored ``(query, positive, negative)`` pairs backed by a ``datasets.Dataset``.

    Use the ``from_*`` constructors or :meth:`load`; the initializer only checks a dataset that
    already has the table's layout.

    Args:
        dataset: columns ``query_id``, ``positive_id``, ``negative_id`` (int64 or string),
            ``margin`` (float32), and optionally both ``pos_score`` and ``neg_score`` (float32).
        source: the TSV file whose line ``i + 1`` is row ``i`` of ``dataset``; error messages then
            point at ``file:line`` instead of a row number.

    Raises:
        ValueError: if a column is missing or has the wrong type.
    """

    def __init__(
        self, dataset: Dataset, *, source: str | Path | None = None, teacher: dict[str, Any] | None = None
    ) -> None:
        columns = set(dataset.column_names)
        missing = [c for c in (*ID_COLUMNS, "margin") if c not in columns]
        if missing:
            raise ValueError(f"a teacher score table needs columns {missing}; the dataset has {dataset.column_names}")
        if len(columns & set(SCORE_COLUMNS)) == 1:
            raise ValueError(f"pos_score and neg_score come together; the dataset has {dataset.column_names}")
        schema = dataset.data.schema
        for name in ID_COLUMNS:
            if schema.field(name).type not in (pa.int64(), pa.string()):
                raise ValueError(f"column {name!r} must be int64 or string, not {schema.field(name).type}")
        for name in ("margin", *(c for c in SCORE_COLUMNS if c in columns)):
            if schema.field(name).type != pa.float32():
                raise ValueError(f"column {name!r} must be float32, not {schema.field(name).type}")
        table = rows(dataset)  # in the dataset's own order; its own table unless a mapping moved rows
        self.dataset = dataset if table is dataset.data else Dataset(table, fingerprint=generate_random_fingerprint())
        self.source = None if source is None else str(source)
        self.teacher = dict(teacher or {})

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_scores(
        cls,
        query_ids: ArrayLike,
        positive_ids: ArrayLike,
        negative_ids: ArrayLike,
        pos_scores: ArrayLike,
        neg_scores: ArrayLike,
    ) -> TeacherScoreTable:
        """Build a table from the teacher's scores of each (query, positive) and (query, negative).

        Scores are stored as float32 and ``margin = pos_score - neg_score`` is computed from the
        stored float32 values, so that equality holds exactly. The table is held in memory; call
        :meth:`save` and :meth:`load` to memory-map a large one.

        Args:
            query_ids, positive_ids, negative_ids: one id per pair (integers or strings).
            pos_scores, neg_scores: one teacher score per pair.

        Returns:
            The table, with ``pos_score`` and ``neg_score`` columns.

        Raises:
            ValueError: if the arrays differ in length, an id is missing (null) or a score is not
                finite; the message names the rows.

        Example:
            >>> table = TeacherScoreTable.from_scores(["q1"], ["d1"], ["d2"], [0.75], [0.5])
            >>> table.dataset[0]
            {'query_id': 'q1', 'positive_id': 'd1', 'negative_id': 'd2',
             'margin': 0.25, 'pos_score': 0.75, 'neg_score': 0.5}
        """
        ids = _id_columns(query_ids, positive_ids, negative_ids)
        pos = _float32_column(pos_scores, "pos_scores")
        neg = _float32_column(neg_scores, "neg_scores")
        return cls._from_arrays(ids, pc.subtract(pos, neg), pos, neg)

    @classmethod
    def from_margins(
        cls,
        query_ids: ArrayLike,
        positive_ids: ArrayLike,
        negative_ids: ArrayLike,
        margins: ArrayLike,
    ) -> TeacherScoreTable:
        """Build a table from teacher margins (``score(q, pos) - score(q, neg)``) alone.

        Raises:
            ValueError: if the arrays differ in length, an id is missing or a margin is not finite.

        Example:
            >>> table = TeacherScoreTable.from_margins([7, 7], [1, 1], [2, 3], [1.5, -0.25])
            >>> table.dataset.column_names, table.dataset["margin"][:]
            (['query_id', 'positive_id', 'negative_id', 'margin'], [1.5, -0.25])
        """
        ids = _id_columns(query_ids, positive_ids, negative_ids)
        return cls._from_arrays(ids, _float32_column(margins, "margins"))

    @classmethod
    def _from_arrays(
        cls, ids: list[pa.Array], margin: pa.Array, pos: pa.Array | None = None, neg: pa.Array | None = None
    ) -> TeacherScoreTable:
        columns = dict(zip(ID_COLUMNS, ids), margin=margin)
        if pos is not None:
            columns.update(pos_score=pos, neg_score=neg)
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the arrays must have one entry per pair; their lengths differ: {lengths}")
        table = pa.table(columns)
        _raise_for_invalid_rows(table, "arrays")
        # an explicit fingerprint spares `datasets` from hashing (pickling) every row
        return cls(Dataset(table, fingerprint=generate_random_fingerprint()))

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> TeacherScoreTable:
        """Wrap a ``datasets.Dataset`` of teacher-scored pairs, e.g. from the Hugging Face Hub.

        The dataset needs ``query_id``, ``positive_id``, ``negative_id`` and either
        ``pos_score`` + ``neg_score`` or the margin as ``margin`` or ``score`` (the Hub subset
        ``load_dataset("sentence-transformers/msmarco", "bert-ensemble-margin-mse", split="train")``
        has ``score``). When both scores and a margin are present, the margin must equal
        ``pos_score - neg_score``. Other columns are left out. Columns are converted only where
        needed (ids to int64 or string, scores to float32), so a memory-mapped dataset stays
        memory-mapped.

        Raises:
            ValueError: listing the columns found and the ones needed; naming rows with a missing id,
                a score that is not finite, or a margin that disagrees with the scores.

        Example:
            >>> hub_like = Dataset.from_dict(
            ...     {"query_id": [3, 3], "positive_id": [30, 30], "negative_id": [31, 32], "score": [4.5, 0.5]})
            >>> TeacherScoreTable.from_dataset(hub_like).dataset["margin"][:]
            [4.5, 0.5]
        """
        found = dataset.column_names
        has_scores = all(c in found for c in SCORE_COLUMNS)
        margin_column = next((c for c in ("margin", "score") if c in found), None)
        if any(c not in found for c in ID_COLUMNS) or not (has_scores or margin_column):
            raise ValueError(
                f"the dataset has columns {found}; a teacher score table needs {list(ID_COLUMNS)} and either "
                f"{list(SCORE_COLUMNS)} or the margin as 'margin' or 'score'"
            )
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: a teacher score table needs at least one scored pair")
        wanted = [*ID_COLUMNS, *(SCORE_COLUMNS if has_scores else ()), *([margin_column] if margin_column else ())]
        table = rows(dataset.select_columns(wanted))
        for name in wanted[3:]:
            _check_numeric(table.column(name), name)
        query_type, passage_type = _id_types([table.schema.field(c).type for c in ID_COLUMNS], ID_COLUMNS)
        table = table.cast(
            pa.schema(
                [(ID_COLUMNS[0], query_type), (ID_COLUMNS[1], passage_type), (ID_COLUMNS[2], passage_type)]
                + [(name, pa.float32()) for name in wanted[3:]]
            )
        )
        if has_scores:
            margin = pc.subtract(table.column("pos_score"), table.column("neg_score"))
            if margin_column:
                _check_margin_agrees(margin, table.column(margin_column), margin_column)
                table = table.drop([margin_column])
            table = table.add_column(3, pa.field("margin", pa.float32()), margin)
        else:
            table = table.rename_columns([*ID_COLUMNS, "margin"])
        _raise_for_invalid_rows(table, "dataset")
        return cls(Dataset(table, fingerprint=generate_random_fingerprint()))

    @classmethod
    def from_tsv(
        cls, path: str | Path, *, cache_dir: str | Path | None = None, show_progress_bar: bool = True
    ) -> TeacherScoreTable:
        """Read the original MS MARCO teacher file: ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``.

        The file has no header (e.g. ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``,
        40M lines). It is parsed in blocks with ``pyarrow.csv`` and written to an Arrow file in
        ``cache_dir``, which is then memory-mapped, so the table never sits in memory. The cache
        file is named after the file's path, size, modification time and a hash of its content
        (:func:`content_sample_hash`): calling again on the unchanged file reopens it without parsing, and an
        edit is parsed again even when it keeps the size and modification time. Row ``i`` is line ``i + 1``.

        Args:
            path: the TSV file.
            cache_dir: where to write the Arrow file; by default ``st_tasb/teacher_scores`` inside
                the ``datasets`` cache (``HF_DATASETS_CACHE``).
            show_progress_bar: show a progress bar while reading.

        Returns:
            The table, with ``pos_score`` and ``neg_score`` columns, memory-mapped.

        The file is read by the reading policy of :mod:`st_tasb.data.text_files` (a byte-order mark skipped, CRLF
        as LF, a byte that is not UTF-8 named at ``file:line``).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            DataFormatError: naming ``file:line`` for up to five malformed lines (wrong number of
                fields, a score that is empty, not a number or not finite, an empty id) with the
                total count of malformed lines; nothing is skipped. Also for a line whose negative is its
                positive or an id with surrounding whitespace (:meth:`check_ids`).

        Example:
            >>> import pathlib, tempfile
            >>> folder = pathlib.Path(tempfile.mkdtemp())
            >>> lines = ["9.5\\t2.5\\t1185869\\t0\\t2675136", "3.5\\t4.0\\t1185869\\t0\\t11"]
            >>> _ = (folder / "scores.tsv").write_text("\\n".join(lines) + "\\n")
            >>> table = TeacherScoreTable.from_tsv(folder / "scores.tsv", cache_dir=folder, show_progress_bar=False)
            >>> table.dataset["margin"][:], table.dataset.features["query_id"].dtype
            ([7.0, -0.5], 'int64')
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher score file not found: {path}")
        status = path.stat()
        if status.st_size == 0:
            raise DataFormatError(f"{path}:1: the file is empty; expected lines of {_LAYOUT}")
        cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        key = hashlib.sha256(
            f"{_CACHE_VERSION}|{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{content_sample_hash(path)}".encode()
        ).hexdigest()[:16]
        cached = cache_dir / f"{path.stem}-{key}.arrow"
        if not cached.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            _tsv_to_arrow(path, cached, show_progress_bar)
        table = cls(Dataset.from_file(str(cached)), source=path)
        table.check_ids()
        return table

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Save as a ``datasets`` Arrow folder (``Dataset.save_to_disk``) plus ``teacher_score_table.json``.

        The folder is written complete under a temporary name beside ``path`` first and then moved in, the record
        last (:func:`~st_tasb.data.files.replacing_folder`): a crash while saving never leaves a half table that
        :meth:`load` or ``st-tasb`` would take for a finished one.

        The JSON file records :attr:`source`, so that messages of the reloaded table still name
        ``file:line``, and :attr:`teacher` (what scored the pairs, and the scale applied), for the card.

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> TeacherScoreTable.from_margins([1], [2], [3], [0.5]).save(folder)
            >>> TeacherScoreTable.load(folder).dataset["margin"][:]
            [0.5]
        """
        metadata = {"source": self.source, "teacher": self.teacher}
        with replacing_folder(path, last=TABLE_RECORD) as partial:  # a killed save leaves no half table under path
            self.dataset.save_to_disk(str(partial))
            (partial / TABLE_RECORD).write_text(json.dumps(metadata) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TeacherScoreTable:
        """Open a table written by :meth:`save`, memory-mapped.

        Raises:
            FileNotFoundError: if ``path`` is not a folder written by :meth:`save`.
            st_tasb.data.files.CorruptFileError: naming the folder and the files it lacks, or the file that cannot
                be read.
        """
        path = Path(path)
        metadata_file = path / TABLE_RECORD
        if not metadata_file.is_file():
            raise FileNotFoundError(f"not a saved teacher score table (no {TABLE_RECORD}): {path}")
        with reading(metadata_file, "teacher score table description"):
            metadata = json.loads(read_text(metadata_file, "teacher score table description"))
            source, teacher = metadata["source"], metadata.get("teacher")
        missing = [name for name in ("state.json", "dataset_info.json") if not (path / name).is_file()]
        if missing:
            raise CorruptFileError(
                f"{path}: the saved teacher score table lacks {' and '.join(missing)} (Dataset.save_to_disk writes them "
                "beside the Arrow files): it was not saved completely, or files were removed; save or score it again"
            )
        with reading(path, "saved teacher score table (an Arrow folder of Dataset.save_to_disk)"):
            return cls(load_from_disk(str(path)), source=source, teacher=teacher)

    def to_tsv(self, path: str | Path) -> None:
        """Write the original layout, ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``, no header.

        Scores are written in the shortest form that reads back to the same float32, so
        ``from_tsv(to_tsv(table))`` reproduces the table exactly.

        Raises:
            ValueError: if the table has margins only (no ``pos_score``/``neg_score``), or an id
                contains a tab or a line break.

        Example:
            >>> import pathlib, tempfile
            >>> file = pathlib.Path(tempfile.mkdtemp()) / "scores.tsv"
            >>> TeacherScoreTable.from_scores([5], [50], [51], [1.25], [-0.5]).to_tsv(file)
            >>> file.read_text()
            '1.25\\t-0.5\\t5\\t50\\t51\\n'
        """
        if not self.has_scores:
            raise ValueError("to_tsv needs pos_score and neg_score; this table holds margins only")
        table = self.dataset.data.table.select(list(TSV_COLUMNS))
        options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
        try:
            pa_csv.write_csv(table, str(path), options)
        except pa.ArrowInvalid as error:
            raise ValueError(f"cannot write {path} in the TSV layout: {error}") from None

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return self.dataset.num_rows

    def __repr__(self) -> str:
        origin = f", source={self.source!r}" if self.source else ""
        return f"TeacherScoreTable(rows={len(self)}, columns={self.dataset.column_names}{origin})"

    @property
    def has_scores(self) -> bool:
        """Whether the table holds the teacher's ``pos_score`` and ``neg_score``, not only margins."""
        return "pos_score" in self.dataset.column_names

    @property
    def query_ids(self) -> pa.Array:
        """The distinct query ids, in the order of their first row.

        Example:
            >>> TeacherScoreTable.from_margins([7, 3, 7], [1, 1, 2], [2, 3, 3], [0.5, 1.0, 2.0]).query_ids.to_pylist()
            [7, 3]
        """
        return self.dataset.data.column("query_id").unique()

    @property
    def num_queries(self) -> int:
        """The number of distinct query ids."""
        return pc.count_distinct(self.dataset.data.column("query_id")).as_py()

    def stats(self) -> TableStats:
        """Rows, queries, pairs per query (min/median/max) and margins (min/mean/max).

        Example:
            >>> print(TeacherScoreTable.from_margins([1, 1, 2], [5, 5, 6], [7, 8, 9], [1.0, 3.0, -1.0]).stats())
            3 pairs over 2 queries; pairs per query min 1 / median 1.5 / max 2; margin min -1 / mean 1 / max 3
        """
        if len(self) == 0:
            raise ValueError("the table is empty")
        counts = pc.value_counts(self.dataset.data.column("query_id")).field("counts").to_numpy()
        margin = self.dataset.data.column("margin")
        extremes = pc.min_max(margin)
        return TableStats(
            rows=len(self),
            queries=len(counts),
            pairs_per_query_min=int(counts.min()),
            pairs_per_query_median=float(np.median(counts)),
            pairs_per_query_max=int(counts.max()),
            margin_min=extremes["min"].as_py(),
            margin_mean=pc.mean(margin).as_py(),
            margin_max=extremes["max"].as_py(),
        )

    def validate(self, queries: TextStore, corpus: TextStore) -> None:
        """Check that every query id is in ``queries`` and every positive/negative id in ``corpus``.

        Raises:
            UnknownIdError: naming how many rows refer to unknown ids, and for each column the
                count and a few ids with their ``file:line`` (or row).

        Example:
            >>> queries = TextStore.from_records([(1, "what is arrow")], name="queries")
            >>> corpus = TextStore.from_records([(10, "a columnar format"), (11, "a pointy stick")], name="corpus")
            >>> table = TeacherScoreTable.from_margins([1, 1], [10, 10], [11, 12], [2.0, 3.0])
            >>> table.validate(queries, corpus)
            Traceback (most recent call last):
            ...
            st_tasb.data.texts.UnknownIdError: 1 of 2 rows name ids that are missing:
            1 negative_id(s) not in corpus, e.g. 12 (row 1)
        """
        unknown = {
            name: np.flatnonzero(store.positions(self.dataset.data.column(name), missing="mask") < 0)
            for name, store in (("query_id", queries), ("positive_id", corpus), ("negative_id", corpus))
        }
        unknown = {name: rows for name, rows in unknown.items() if len(rows)}
        if not unknown:
            return
        bad_rows = len(np.unique(np.concatenate(list(unknown.values()))))
        parts = []
        for name, bad in unknown.items():
            store = queries if name == "query_id" else corpus
            examples = bad[:_MAX_EXAMPLES]
            ids = self.dataset.data.column(name).take(pa.array(examples)).to_pylist()
            shown = ", ".join(f"{i!r} ({self.where(int(r))})" for i, r in zip(ids, examples))
            parts.append(f"{len(bad)} {name}(s) not in {store.name}, e.g. {shown}")
        raise UnknownIdError(f"{bad_rows} of {len(self)} rows name ids that are missing: " + "; ".join(parts))

    def deduplicate(self, keep: str = "first") -> TeacherScoreTable:
        """The table with each (query, positive, negative) pair once.

        A pair listed twice would be drawn twice as often, so training refuses such a table
        (:func:`~st_tasb.training.dataset.build_training_dataset`); this is the explicit way out.

        Args:
            keep: ``"first"`` keeps the first row of each pair; ``"mean"`` keeps one row whose scores and
                margin are the means of the pair's rows.

        Returns:
            A new table (in memory), rows in the order of their first occurrence; :attr:`source` and
            :attr:`teacher` carry over (line numbers in messages then refer to the new rows).

        Raises:
            ValueError: for another ``keep``.

        Example:
            >>> table = TeacherScoreTable.from_margins([1, 1, 1], [5, 5, 6], [7, 7, 7], [1.0, 3.0, 2.0])
            >>> table.deduplicate("first").dataset["margin"][:], table.deduplicate("mean").dataset["margin"][:]
            ([1.0, 2.0], [2.0, 2.0])
        """
        if keep not in ("first", "mean"):
            raise ValueError(f"keep must be 'first' or 'mean', not {keep!r}")
        data = self.dataset.data.table.append_column("row", pa.array(np.arange(len(self), dtype=np.int64)))
        values = [name for name in data.column_names if name not in (*ID_COLUMNS, "row")]
        how = "first" if keep == "first" else "mean"
        grouped = data.group_by(list(ID_COLUMNS), use_threads=False).aggregate(
            [("row", "min"), *((name, how) for name in values)]
        )
        grouped = grouped.sort_by("row_min")
        columns = {name: grouped.column(name) for name in ID_COLUMNS}
        columns.update({name: pc.cast(grouped.column(f"{name}_{how}"), pa.float32()) for name in values})
        ordered = [*ID_COLUMNS, *(name for name in self.dataset.column_names if name in values)]
        deduplicated = pa.table({name: columns[name] for name in ordered})
        return TeacherScoreTable(Dataset(deduplicated, fingerprint=generate_random_fingerprint()), source=self.source,
                                 teacher=self.teacher)

    def drop_small_margins(self, min_margin: float) -> tuple[TeacherScoreTable, HardMarginReport]:
        """The table without the pairs whose teacher margin is below ``min_margin``, and what was removed.

        A negative that the teacher scores nearly as high as the positive (or higher) is likely a false negative:
        a relevant passage without a label. A hard-margin threshold (Wang et al., SIGIR 2023, in their
        reproduction of TAS-Balanced) leaves such pairs out before the margins are binned. A query whose every
        pair is removed leaves training; the report counts those queries and names some of them.

        Args:
            min_margin: the smallest margin kept (pairs with ``margin >= min_margin`` stay).

        Returns:
            ``(table, report)``: a new table (in memory; :attr:`source` and :attr:`teacher` carry over, line
            numbers in messages then refer to the new rows) and a :class:`HardMarginReport`.

        Raises:
            ValueError: for a threshold that is not a finite number, or one that removes every pair (naming
                the largest margin of the table).

        Example:
            >>> table = TeacherScoreTable.from_margins([1, 1, 1, 2], [5, 5, 5, 6], [7, 8, 9, 9], [-1.0, 0.5, 3.0, 0.2])
            >>> kept, report = table.drop_small_margins(1.0)
            >>> kept.dataset["margin"][:], (report.pairs_removed, report.queries_touched, report.queries_emptied)
            ([3.0], (3, 2, 1))
            >>> print(report)
            min_margin 1 removed 3 of 4 pairs (75.0%), from 2 of 2 queries; 1 queries lost every pair and leave training, e.g. 2
        """
        check_number("min_margin", min_margin, integer=False)
        data = self.dataset.data.table
        keep = pc.greater_equal(data.column("margin"), pa.scalar(min_margin, pa.float32()))
        kept = data.filter(keep)
        if kept.num_rows == 0:
            largest = pc.max(data.column("margin")).as_py()
            raise ValueError(
                f"min_margin={min_margin:g} removes every pair of the table (its largest margin is {largest:.4g}); "
                "choose a threshold from the margin distribution (TeacherScoreTable.stats())"
            )
        queries_before = pc.unique(data.column("query_id"))
        touched = pc.unique(data.filter(pc.invert(keep)).column("query_id"))
        emptied = pc.filter(queries_before, pc.invert(pc.is_in(queries_before, kept.column("query_id").unique())))
        report = HardMarginReport(
            min_margin=float(min_margin),
            pairs_before=data.num_rows,
            pairs_removed=data.num_rows - kept.num_rows,
            queries_before=len(queries_before),
            queries_touched=len(touched),
            queries_emptied=len(emptied),
            emptied_examples=tuple(emptied[:_MAX_EXAMPLES].to_pylist()),
        )
        table = TeacherScoreTable(Dataset(kept, fingerprint=generate_random_fingerprint()), source=self.source,
                                  teacher=self.teacher)
        return table, report

    def where(self, row: int) -> str:
        """Where row ``row`` came from: ``file:line`` of the TSV it was read from, else ``row N``."""
        return f"{self.source}:{row + 1}" if self.source else f"row {row}"

    def check_ids(self) -> None:
        """Refuse an id with surrounding whitespace (it would match no text: BEIR files refuse such ids too) and a row
        whose negative is its positive (its margin says nothing, and in a batch the passage would be a negative of
        its own query).

        Raises:
            DataFormatError: naming the first such row (``file:line`` for a TSV) and how many there are.

        Example:
            >>> TeacherScoreTable.from_margins(["q1", "q1"], ["d1", "d2"], ["d3", "d2"], [1.0, 0.0]).check_ids()
            Traceback (most recent call last):
            ...
            st_tasb.data.text_files.DataFormatError: row 1: the negative 'd2' is the positive of the same row (1 such row(s) in the table)
            >>> TeacherScoreTable.from_margins(["q1", "q1 "], ["d1", "d2"], ["d3", "d4"], [1.0, 0.0]).check_ids()
            Traceback (most recent call last):
            ...
            st_tasb.data.text_files.DataFormatError: row 1: query_id 'q1 ' has surrounding whitespace (1 such row(s) in the table)
        """
        table = rows(self.dataset)
        for name in ID_COLUMNS:
            padded = padded_id_rows(table.column(name))
            if len(padded):
                raise DataFormatError(
                    f"{self.where(int(padded[0]))}: {name} {self.dataset[int(padded[0])][name]!r} has surrounding "
                    f"whitespace ({len(padded)} such row(s) in the table)"
                )
        same = same_passage_rows(table.column("positive_id"), table.column("negative_id"))
        if len(same):
            passage = self.dataset[int(same[0])]["negative_id"]
            raise DataFormatError(
                f"{self.where(int(same[0]))}: the negative {passage!r} is the positive of the same row "
                f"({len(same)} such row(s) in the table)"
            )


def padded_id_rows(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The rows whose id (a string) begins or ends with whitespace; none for integer ids.

    Example:
        >>> padded_id_rows(pa.array(["a", " b", "c\\t", "d e"])).tolist()
        [1, 2]
    """
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        return np.zeros(0, dtype=np.int64)
    padded = pc.match_substring_regex(ids, r"^\s|\s$")
    return np.flatnonzero(pc.fill_null(padded, False).to_numpy(zero_copy_only=False))


def same_passage_rows(positive_ids: pa.ChunkedArray | pa.Array, negative_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The rows whose negative id equals their positive id.

    Example:
        >>> same_passage_rows(pa.array([1, 2, 3]), pa.array([4, 2, 3])).tolist()
        [1, 2]
    """
    equal = pc.equal(positive_ids, negative_ids)
    return np.flatnonzero(pc.fill_null(equal, False).to_numpy(zero_copy_only=False))


SAMPLE_BLOCKS = 256
SAMPLE_BLOCK_SIZE = 1 << 16


def content_sample_hash(path: str | Path) -> str:
    """A fast hash of a file's content: the whole file up to 16 MiB; beyond that, 256 blocks of 64 KiB spread evenly
    over it, the first and the last included (16 MiB read, about 0.1 s for the 1.7 GB MS MARCO teacher file).

    An edit is caught when it touches a sampled block or changes the size or modification time; one that keeps
    all three and falls between the blocks of a file over 16 MiB is not (hashing all 1.7 GB would take seconds
    on every warm load).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "scores.tsv"
        >>> _ = path.write_text("9.5\\t2.5\\t1\\t10\\t11\\n")
        >>> before = content_sample_hash(path)
        >>> _ = path.write_text("9.5\\t2.5\\t1\\t10\\t12\\n")  # the same size
        >>> content_sample_hash(path) != before
        True
    """
    digest = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_SIZE:
            digest.update(handle.read())
        else:
            for offset in np.linspace(0, size - SAMPLE_BLOCK_SIZE, SAMPLE_BLOCKS).astype(np.int64).tolist():
                handle.seek(offset)
                digest.update(handle.read(SAMPLE_BLOCK_SIZE))
    return digest.hexdigest()


# ---------------------------------------------------------------------- array helpers

_LAYOUT = "pos_score<TAB>neg_score<TAB>query_id<TAB>positive_id<TAB>negative_id"


def _to_arrow(values: ArrayLike) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values)


def _check_numeric(column: pa.ChunkedArray, name: str) -> None:
    """Raise ``ValueError`` naming the column and its first row that is not a number."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        return
    try:
        pc.cast(column, pa.float32())
        return
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for row, value in enumerate(column.to_pylist()):  # only when the column does not convert: find the culprit
        try:
            float(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {name!r} must hold numbers; row {row} holds {value!r}") from None
    raise ValueError(f"column {name!r} must hold numbers, not {column.type}")


def _id_types(types: Sequence[pa.DataType], names: Sequence[str]) -> tuple[pa.DataType, pa.DataType]:
    """Target types of (query ids, passage ids): int64 when all ids of the kind are integers, else string."""
    for name, kind in zip(names, types):
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{name} must hold integers or strings, not {kind}")
    query = pa.int64() if pa.types.is_integer(types[0]) else pa.string()
    passage = pa.int64() if all(pa.types.is_integer(t) for t in types[1:]) else pa.string()
    return query, passage


def _id_columns(query_ids: ArrayLike, positive_ids: ArrayLike, negative_ids: ArrayLike) -> list[pa.Array]:
    arrays = [_to_arrow(values) for values in (query_ids, positive_ids, negative_ids)]
    query_type, passage_type = _id_types([a.type for a in arrays], ("query_ids", "positive_ids", "negative_ids"))
    return [arrays[0].cast(query_type), arrays[1].cast(passage_type), arrays[2].cast(passage_type)]


def _float32_column(values: ArrayLike, name: str) -> pa.Array:
    array = _to_arrow(values)
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise ValueError(f"{name} must be numbers, not {array.type}")
    return array.cast(pa.float32())


def _invalid_rows(table: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """Row numbers of missing ids and of scores or margins that are missing or not finite, by problem."""
    problems = {}
    for name in sorted(table.column_names, key=lambda name: name == "margin"):  # a score's problem before its margin's
        column = table.column(name)
        if name in ID_COLUMNS:
            empty = pc.is_null(column)
            if pa.types.is_string(column.type):
                empty = pc.or_kleene(empty, pc.equal(pc.binary_length(column), 0))
            if pc.any(empty).as_py():
                problems[f"{name} is empty"] = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
        elif column.null_count or not pc.all(pc.is_finite(column)).as_py():
            finite = pc.fill_null(pc.is_finite(column), False).to_numpy(zero_copy_only=False)
            problems[f"{name} is empty or not finite"] = np.flatnonzero(~finite)
    return problems


def _raise_for_invalid_rows(table: pa.Table, what: str) -> None:
    problems = _invalid_rows(table)
    if not problems:
        return
    bad_rows = np.unique(np.concatenate(list(problems.values())))
    shown = "; ".join(
        f"row {row}: " + ", ".join(problem for problem, rows in problems.items() if row in rows)
        for row in bad_rows[:_MAX_EXAMPLES]
    )
    raise ValueError(f"{len(bad_rows)} invalid row(s) in the {what}, e.g. {shown}")


def _check_margin_agrees(computed: pa.ChunkedArray, given: pa.ChunkedArray, name: str) -> None:
    """Raise if a given margin differs from pos_score - neg_score beyond float32 rounding (in blocks, low memory)."""
    total, examples, offset = 0, [], 0
    for batch in pa.table({"computed": computed, "given": given}).to_batches(max_chunksize=1 << 20):
        computed_np, given_np = (column.to_numpy(zero_copy_only=False) for column in batch.columns)
        rows = np.flatnonzero(~np.isclose(computed_np, given_np, rtol=1e-5, atol=1e-5, equal_nan=True))
        total += len(rows)
        shown = rows[: _MAX_EXAMPLES - len(examples)]
        examples += [f"row {offset + r}: {given_np[r]} vs {computed_np[r]}" for r in shown]
        offset += batch.num_rows
    if total:
        shown = ", ".join(examples)
        raise ValueError(f"column {name!r} disagrees with pos_score - neg_score in {total} row(s), e.g. {shown}")


def _default_cache_dir() -> Path:
    return Path(datasets_config.HF_DATASETS_CACHE) / "st_tasb" / "teacher_scores"


# ---------------------------------------------------------------------- TSV reading

_TSV_SCHEMA_FLOATS = [("margin", pa.float32()), ("pos_score", pa.float32()), ("neg_score", pa.float32())]


def _tsv_to_arrow(path: Path, target: Path, show_progress_bar: bool) -> None:
    """Parse ``path`` into the Arrow stream file ``target``, or raise a :class:`DataFormatError`."""
    id_types = _sniff_id_types(path)
    failure = _convert_tsv(path, target, id_types, show_progress_bar)
    if failure is None:
        return
    # error path: find the malformed lines (slow, line by line), or the id types the sniffing missed
    scan = _scan_tsv(path, show_progress_bar)
    if scan.bad_lines:
        raise DataFormatError(scan.report(path))
    if scan.id_types != id_types:
        failure = _convert_tsv(path, target, scan.id_types, show_progress_bar)
        if failure is None:
            return
    raise DataFormatError(f"{path}: cannot be read as teacher scores ({_LAYOUT}): {failure}")


def _sniff_id_types(path: Path) -> tuple[pa.DataType, pa.DataType]:
    """Id types from the first lines (a later non-integer id is caught on the error path)."""
    scan = _LineScan()
    for line_number, line in _tsv_lines(path):
        if line_number > _SNIFF_LINES:
            break
        scan.add(f"{path}:{line_number}", line)
    return scan.id_types


def _tsv_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Every line of the teacher TSV by the reading policy (:func:`~st_tasb.data.text_files.text_lines`), blank ones
    included: the fast path, ``pyarrow.csv``, also skips a byte-order mark and reads CRLF as LF, and row ``i`` must stay
    line ``i + 1``."""
    return text_lines(path, "teacher score file", skip_blank=False)


def _convert_tsv(
    path: Path, target: Path, id_types: tuple[pa.DataType, pa.DataType], show_progress_bar: bool
) -> str | None:
    """Stream the TSV into ``target`` block by block; on any malformed row return why, and write nothing."""
    query_type, passage_type = id_types
    id_schema = [("query_id", query_type), ("positive_id", passage_type), ("negative_id", passage_type)]
    schema = pa.schema(id_schema + _TSV_SCHEMA_FLOATS)
    reader_options = dict(
        read_options=pa_csv.ReadOptions(column_names=list(TSV_COLUMNS), block_size=_BLOCK_SIZE),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={**dict(id_schema), "pos_score": pa.float32(), "neg_score": pa.float32()},
            null_values=[""],
            strings_can_be_null=True,
        ),
    )
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with pa.OSFile(str(path)) as source, pa.ipc.new_stream(temporary, schema) as writer, _progress_bar(
            path, "Reading", show_progress_bar
        ) as progress:
            for batch in pa_csv.open_csv(source, **reader_options):
                if _invalid_rows(batch):
                    return "a row has an empty or non-finite value"
                pos, neg = batch.column("pos_score"), batch.column("neg_score")
                margin = pc.subtract(pos, neg)
                if not pc.all(pc.is_finite(margin)).as_py():
                    return "pos_score - neg_score overflows float32"
                columns = [batch.column(name) for name, _ in id_schema] + [margin, pos, neg]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                progress.update(source.tell() - progress.n)
        os.replace(temporary, target)
        return None
    except pa.ArrowInvalid as error:
        return str(error)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class _LineScan:
    """Checks TSV lines one at a time: counts malformed ones, keeps a few, and tracks which ids are integers."""

    def __init__(self) -> None:
        self.bad_lines = 0
        self.examples: list[str] = []
        self.integer_ids = {"query": True, "passage": True}

    def add(self, where: str, line: str) -> None:
        try:
            self._check(where, line)
        except DataFormatError as problem:
            self.bad_lines += 1
            if len(self.examples) < _MAX_EXAMPLES:
                self.examples.append(str(problem))

    def _check(self, where: str, line: str) -> None:
        fields = line.split("\t")
        if len(fields) != len(TSV_COLUMNS):
            found = "an empty line" if not line else f"{len(fields)} field(s)"
            raise DataFormatError(f"{where}: expected {len(TSV_COLUMNS)} tab-separated fields ({_LAYOUT}), found {found}")
        scores = []
        for name, text in zip(TSV_COLUMNS[:2], fields[:2]):
            with np.errstate(over="ignore"):
                value = np.float32(number_field(text, name, where))
            if not math.isfinite(value):
                raise DataFormatError(f"{where}: {name} {text!r} is not finite (as float32)")
            scores.append(value)
        for name, text in zip(TSV_COLUMNS[2:], fields[2:]):
            if not text:
                raise DataFormatError(f"{where}: {name} is empty")
        with np.errstate(over="ignore"):
            if not math.isfinite(scores[0] - scores[1]):
                raise DataFormatError(f"{where}: pos_score - neg_score overflows float32")
        self.integer_ids["query"] &= bool(_INTEGER.fullmatch(fields[2]))
        self.integer_ids["passage"] &= bool(_INTEGER.fullmatch(fields[3]) and _INTEGER.fullmatch(fields[4]))

    @property
    def id_types(self) -> tuple[pa.DataType, pa.DataType]:
        return tuple(pa.int64() if self.integer_ids[kind] else pa.string() for kind in ("query", "passage"))

    def report(self, path: Path) -> str:
        lines = "\n".join(f"  {problem}" for problem in self.examples)
        more = f" (the first {len(self.examples)} shown)" if self.bad_lines > len(self.examples) else ""
        return f"{path}: {self.bad_lines} malformed line(s) in a teacher score file{more}:\n{lines}"


def _progress_bar(path: Path, verb: str, show: bool) -> tqdm:
    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{verb} {path.name}", disable=not progress_enabled(show))


def _scan_tsv(path: Path, show_progress_bar: bool) -> _LineScan:
    scan = _LineScan()
    with _progress_bar(path, "Checking", show_progress_bar) as progress:
        for line_number, line in _tsv_lines(path):
            scan.add(f"{path}:{line_number}", line)
            progress.update(len(line) + 1)
    return scan
