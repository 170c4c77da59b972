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
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset


class UnknownIdError(KeyError):
    """Raised when ids are absent from a :class:`TextStore`; names how many and which."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


IdsLike = Union[pa.Array, pa.ChunkedArray, Sequence[Any], np.ndarray]


def as_id_array(ids: IdsLike) -> pa.Array:
    """Ids as one Arrow array: integers as int64, strings as they are, anything else as strings.

    Example:
        >>> as_id_array([3, 1]).type, as_id_array(["a"]).type
        (DataType(int64), DataType(string))
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    elif not isinstance(ids, pa.Array):
        ids = pa.array(np.asarray(ids).tolist())
    if pa.types.is_integer(ids.type):
        return ids.cast(pa.int64())
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        return ids
    return ids.cast(pa.string())


class IdIndex:
    """Vectorised id -> position lookup over a fixed array of unique ids.

    Integer and string ids are interchangeable: ``"123"`` finds ``123``; a requested id that is not a
    number simply finds nothing in an integer index.

    Args:
        ids: the ids, in position order.
        name: what the ids are (used in error messages).

    Raises:
        ValueError: if ids repeat.

    Example:
        >>> index = IdIndex([10, 20, 30])
        >>> index.positions(["20", 40, "abc", 10]).tolist()
        [1, -1, -1, 0]
    """

    def __init__(self, ids: IdsLike, name: str = "ids") -> None:
        self.ids = as_id_array(ids)
        self.name = name
        if pc.count_distinct(self.ids).as_py() != len(self.ids):
            counts = pc.value_counts(self.ids)
            repeated = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
            raise ValueError(f"{name}: ids must be unique; repeated ids include {repeated}")
        self._as_strings: pa.Array | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, requested: IdsLike) -> np.ndarray:
        """The position of every requested id, ``-1`` for ids not in the index (int64 array)."""
        requested = as_id_array(requested)
        value_set = self.ids
        if requested.type != value_set.type:  # one side holds strings: compare as strings
            requested = requested.cast(pa.string())
            if self._as_strings is None:
                self._as_strings = value_set.cast(pa.string())
            value_set = self._as_strings
        found = pc.index_in(requested, value_set=value_set)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


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
        self._index = IdIndex(dataset.data.column("id"), name=name)

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
        return len(self._index)

    @property
    def ids(self) -> pa.Array:
        """The ids in row order, as an Arrow array (int64 or string)."""
        return self._index.ids

    def positions(self, ids: IdsLike, *, missing: str = "raise") -> np.ndarray:
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
        requested = as_id_array(ids)
        pos = self._index.positions(requested)
        if missing == "raise" and (pos < 0).any():
            bad = np.flatnonzero(pos < 0)
            examples = requested.take(pa.array(bad[:5])).to_pylist()
            raise UnknownIdError(f"{len(bad)} id(s) are not in {self.name}, e.g. {examples}")
        return pos

    def texts(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """Texts at row ``positions``, in order."""
        column = self.dataset.data.column("text")
        return column.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()

    def __getitem__(self, item: Any) -> str:
        """The text of one id."""
        return self.texts(self.positions([item]))[0]
