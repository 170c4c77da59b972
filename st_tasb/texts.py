"""Id -> text lookup over Arrow-backed tables (queries and passages).

A :class:`TextStore` wraps a ``datasets.Dataset`` with an ``id`` and a ``text`` column. Ids are
mapped to row positions in one vectorised Arrow call, so resolving millions of ids never builds a
Python dictionary.

Example:
    >>> store = TextStore.from_records([("d1", "first passage"), ("d2", "second passage")])
    >>> store.positions(["d2", "d1"]).tolist()
    [1, 0]
    >>> store.texts([1, 0])
    ['second passage', 'first passage']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset


class UnknownIdError(KeyError):
    """Raised when ids are absent from a :class:`TextStore`; names how many and which."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class TextStore:
    """Texts addressed by id, backed by an Arrow table (memory-mapped when loaded from disk).

    Args:
        dataset: a ``datasets.Dataset`` with columns ``id`` and ``text``. Integer ids are kept as
            integers (MS MARCO style); anything else is compared as strings.
        name: what the store holds ("corpus", "queries"), used in error messages.

    Raises:
        ValueError: if a column is missing or ids repeat.
    """

    def __init__(self, dataset: Dataset, name: str = "texts") -> None:
        missing = {"id", "text"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"{name}: the dataset needs columns 'id' and 'text'; missing {sorted(missing)}")
        if dataset._indices is not None:
            dataset = dataset.flatten_indices()
        self.dataset = dataset
        self.name = name
        ids = dataset.data.column("id").combine_chunks()
        if pa.types.is_integer(ids.type):
            ids = ids.cast(pa.int64())
        elif not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
            ids = ids.cast(pa.string())
        if pc.count_distinct(ids).as_py() != len(ids):
            counts = pc.value_counts(ids)
            repeated = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
            raise ValueError(f"{name}: ids must be unique; repeated ids include {repeated}")
        self._ids = ids

    @classmethod
    def from_records(cls, records: Iterable[tuple[Any, str]], name: str = "texts") -> TextStore:
        """Build a store from ``(id, text)`` pairs.

        Example:
            >>> len(TextStore.from_records([(1, "a"), (2, "b")], name="queries"))
            2
        """
        ids, texts = zip(*records) if records else ((), ())
        return cls(Dataset.from_dict({"id": list(ids), "text": list(texts)}), name=name)

    @classmethod
    def from_dict(cls, mapping: dict[Any, str], name: str = "texts") -> TextStore:
        """Build a store from an ``{id: text}`` dictionary (small data; large data should stay Arrow)."""
        return cls(Dataset.from_dict({"id": list(mapping), "text": list(mapping.values())}), name=name)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> pa.Array:
        """The ids in row order, as an Arrow array (int64 or string)."""
        return self._ids

    def _coerce(self, ids: pa.Array | Sequence[Any] | np.ndarray) -> pa.Array:
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(ids).tolist())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.type == self._ids.type:
            return arr
        if pa.types.is_integer(self._ids.type):
            try:
                return arr.cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # non-integer ids can never match integer ids: map them to nulls (reported as missing)
                return pa.nulls(len(arr), pa.int64())
        return arr.cast(pa.string())

    def positions(self, ids: pa.Array | Sequence[Any] | np.ndarray, *, missing: str = "raise") -> np.ndarray:
        """Row positions of ``ids`` (vectorised); ``-1`` marks unknown ids when ``missing="mask"``.

        Args:
            ids: ids to look up (any array-like; integers and strings are both accepted).
            missing: ``"raise"`` (default) raises :class:`UnknownIdError` naming up to five unknown ids;
                ``"mask"`` returns ``-1`` for them.

        Example:
            >>> store = TextStore.from_records([(10, "x"), (20, "y")])
            >>> store.positions(["20", "30"], missing="mask").tolist()
            [1, -1]
        """
        if missing not in ("raise", "mask"):
            raise ValueError(f"missing must be 'raise' or 'mask', not {missing!r}")
        arr = self._coerce(ids)
        found = pc.index_in(arr, value_set=self._ids)
        pos = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        if missing == "raise" and (pos < 0).any():
            bad = np.flatnonzero(pos < 0)
            examples = [arr[int(i)].as_py() for i in bad[:5]]
            raise UnknownIdError(f"{len(bad)} id(s) are not in {self.name}, e.g. {examples}")
        return pos

    def texts(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """Texts at row ``positions``, in order."""
        column = self.dataset.data.column("text")
        return column.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()

    def __getitem__(self, item: Any) -> str:
        """The text of one id."""
        return self.texts(self.positions([item]))[0]
