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

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from st_tasb.data.arrow import rows

_DIGEST_ROWS = 65_536  # rows hashed per step by TextStore.digest (part of the digest's definition)


class UnknownIdError(KeyError):
    """Raised when ids are absent from a :class:`TextStore`; names how many and which."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


IdsLike = Union[pa.Array, pa.ChunkedArray, Sequence[Any], np.ndarray]
_LOOKUP_ROWS = 1 << 22  # ids of a many-chunk column looked up at a time


def as_id_array(ids: IdsLike) -> pa.Array:
    """Ids as one Arrow array: integers as int64, strings as they are, anything else as strings.

    Example:
        >>> as_id_array([3, 1]).type, as_id_array(["a"]).type
        (DataType(int64), DataType(string))
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.chunk(0) if ids.num_chunks == 1 else ids.combine_chunks()
    elif not isinstance(ids, pa.Array):
        values = np.asarray(ids)
        ids = pa.array(values if values.dtype.kind in "iu" else values.tolist())
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
        self._as_strings: pa.Array | None = None
        self._integer = _IntegerLookup(self.ids.to_numpy()) if pa.types.is_integer(self.ids.type) else None
        repeated = self._integer.repeated() if self._integer else _repeated_strings(self.ids)
        if repeated:
            raise ValueError(f"{name}: ids must be unique; repeated ids include {repeated}")

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, requested: IdsLike) -> np.ndarray:
        """The position of every requested id, ``-1`` for ids not in the index (an int32 or int64 array)."""
        if (
            self._integer is not None
            and isinstance(requested, pa.ChunkedArray)
            and requested.num_chunks > 1
            and pa.types.is_integer(requested.type)
        ):  # a few million ids at a time: no combined copy of a large column, no Python loop over small chunks
            found = None
            done = 0
            for group in _chunk_groups(requested.chunks, _LOOKUP_ROWS):
                part = self._integer.positions(pa.chunked_array(group, type=requested.type).to_numpy())
                if found is None:
                    found = np.empty(len(requested), dtype=part.dtype)
                found[done : done + len(part)] = part
                done += len(part)
            return found
        requested = as_id_array(requested)
        if self._integer is not None and pa.types.is_integer(requested.type):
            return self._integer.positions(requested.to_numpy(zero_copy_only=False))
        value_set = self.ids
        if requested.type != value_set.type:  # one side holds strings: compare as strings
            requested = requested.cast(pa.string())
            if self._as_strings is None:
                self._as_strings = value_set.cast(pa.string())
            value_set = self._as_strings
        found = pc.index_in(requested, value_set=value_set)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


class _IntegerLookup:
    """Integer ids -> positions: a dense table when the ids are compact (MS MARCO), else binary search."""

    DENSE_SPAN_FACTOR = 4  # a dense table may be this many times larger than the id count

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.size = len(ids)
        self.low = int(ids.min()) if len(ids) else 0
        span = int(ids.max()) - self.low + 1 if len(ids) else 0
        self.dtype = np.int32 if len(ids) < 2**31 else np.int64  # positions: no wider than needed
        self.table: np.ndarray | None = None
        # ids low, low + 1, ... in order (MS MARCO's passage ids): a position is the id minus low, no table
        self.consecutive = span == len(ids) and bool(np.all(np.diff(ids) == 1))
        if not self.consecutive and span <= self.DENSE_SPAN_FACTOR * max(len(ids), 1 << 16):
            self.table = np.full(span, -1, dtype=self.dtype)
            self.table[ids - self.low] = np.arange(len(ids), dtype=self.dtype)
        elif not self.consecutive:
            self.order = np.argsort(ids, kind="stable")
            self.sorted = ids[self.order]

    def repeated(self) -> list[int]:
        """Up to five ids that occur more than once."""
        if self.consecutive:
            return []
        if self.table is not None:
            if int(np.count_nonzero(self.table >= 0)) == self.size:
                return []
            counts = np.bincount(self.ids - self.low, minlength=len(self.table))  # error path only
            return (np.flatnonzero(counts > 1)[:5] + self.low).tolist()
        duplicate = self.sorted[1:] == self.sorted[:-1]
        return np.unique(self.sorted[1:][duplicate])[:5].tolist()

    def positions(self, requested: np.ndarray) -> np.ndarray:
        offset = requested - self.low if self.low else requested
        if self.consecutive:
            found = offset.astype(self.dtype)
            if len(offset) and (offset.min() < 0 or offset.max() >= self.size):
                found[(offset < 0) | (offset >= self.size)] = -1
            return found
        if self.table is not None:
            if len(offset) == 0 or (offset.min() >= 0 and offset.max() < len(self.table)):
                return self.table[offset]
            inside = (offset >= 0) & (offset < len(self.table))
            found = np.full(len(requested), -1, dtype=self.table.dtype)
            found[inside] = self.table[offset[inside]]
            return found
        slot = np.minimum(np.searchsorted(self.sorted, requested), max(self.size - 1, 0))
        hit = self.sorted[slot] == requested if self.size else np.zeros(len(requested), dtype=bool)
        return np.where(hit, self.order[slot], -1)


def _chunk_groups(chunks: list[pa.Array], rows: int) -> Iterator[list[pa.Array]]:
    """Consecutive chunks grouped into runs of at least ``rows`` rows (the last run may be shorter)."""
    group: list[pa.Array] = []
    size = 0
    for chunk in chunks:
        group.append(chunk)
        size += len(chunk)
        if size >= rows:
            yield group
            group, size = [], 0
    if group:
        yield group


def _repeated_strings(ids: pa.Array) -> list[str]:
    """Up to five string ids that occur more than once."""
    if pc.count_distinct(ids).as_py() == len(ids):
        return []
    counts = pc.value_counts(ids)
    return counts.field("values").filter(pc.greater(counts.field("counts"), 1))[:5].to_pylist()


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
        self.dataset = dataset
        self.name = name
        self._rows = rows(dataset)
        self._index = IdIndex(self._rows.column("id"), name=name)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the texts only: the id index is derived from them (smaller pickles for dataloader workers,
        and a cheaper fingerprint when ``datasets`` hashes a transform that holds the store)."""
        return {"dataset": self.dataset, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dataset, self.name = state["dataset"], state["name"]
        self._rows = rows(self.dataset)
        self._index = IdIndex(self._rows.column("id"), name=self.name)

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

    def lengths(self) -> np.ndarray:
        """The length of every text in characters, in row order (computed in Arrow, no Python strings).

        Example:
            >>> TextStore.from_records([("a", "four"), ("b", "")]).lengths().tolist()
            [4, 0]
        """
        return pc.utf8_length(self._rows.column("text")).to_numpy(zero_copy_only=False).astype(np.int64)

    def texts(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """Texts at row ``positions``, in order."""
        column = self._rows.column("text")
        return column.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()

    def digest(self) -> str:
        """A SHA-256 hex digest of the ids and texts in row order: equal for stores with the same content, whatever
        their name or how they were built (files that cache something per store are named after it).

        Example:
            >>> a = TextStore.from_records([("d1", "x"), ("d2", "y")], name="corpus")
            >>> a.digest() == TextStore.from_dict({"d1": "x", "d2": "y"}).digest()
            True
            >>> a.digest() == TextStore.from_records([("d2", "y"), ("d1", "x")]).digest()
            False
        """
        hasher = hashlib.sha256()
        ids, texts = self.ids.cast(pa.string()), self._rows.column("text")
        for start in range(0, len(self), _DIGEST_ROWS):
            stop = min(start + _DIGEST_ROWS, len(self))
            for value in (*ids[start:stop].to_pylist(), *texts.slice(start, stop - start).to_pylist()):
                encoded = value.encode()
                hasher.update(len(encoded).to_bytes(8, "little") + encoded)
        return hasher.hexdigest()

    def __getitem__(self, item: Any) -> str:
        """The text of one id."""
        return self.texts(self.positions([item]))[0]
