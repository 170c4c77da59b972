"""Arrow views of ``datasets.Dataset`` objects, through public API only.

Example:
    >>> from datasets import Dataset
    >>> dataset = Dataset.from_dict({"id": [1, 2, 3]})
    >>> rows(dataset) is dataset.data, rows(dataset.select([2, 0])).column("id").to_pylist()
    (True, [3, 1])
"""

from __future__ import annotations

import pyarrow as pa
from datasets import Dataset
from datasets.table import InMemoryTable, Table


def rows(dataset: Dataset) -> Table:
    """The rows of ``dataset`` in its own order, as a ``datasets`` table.

    Without an indices mapping (left by ``select``, ``shuffle``, ``filter``, ...), or with one that keeps
    every row in place, this is the dataset's own table: memory-mapped when the dataset is, and still
    known to ``datasets`` by its cache files. Otherwise the mapped rows are gathered into memory.
    """
    mapped = dataset.with_format("arrow")[:]
    own = dataset.data
    return own if _same_memory(mapped, own.table) else InMemoryTable(mapped)


def _same_memory(a: pa.Table, b: pa.Table) -> bool:
    """Whether ``a`` holds ``b``'s rows without a copy: as many rows, and its first and last rows in ``b``'s buffers.

    A slice or re-chunking of ``b`` (what ``datasets`` returns without an indices mapping) reuses ``b``'s buffers;
    rows gathered through a mapping are in new ones. Only the buffers of each column's first and last chunk are
    compared (a table can have thousands of chunks), and nothing is read but their addresses.
    """
    if a.num_rows != b.num_rows:
        return False
    if a.num_rows == 0:
        return True

    def inside(chunk: pa.Array, host: pa.Array) -> bool:
        spans = [(buffer.address, buffer.address + buffer.size) for buffer in host.buffers() if buffer is not None]
        return all(
            any(start <= buffer.address < end or buffer.address == start for start, end in spans)
            for buffer in chunk.buffers()
            if buffer is not None and buffer.size
        )

    for column_a, column_b in zip(a.columns, b.columns):
        if not (inside(_end_chunk(column_a, 0), _end_chunk(column_b, 0))
                and inside(_end_chunk(column_a, -1), _end_chunk(column_b, -1))):
            return False
    return True


def _end_chunk(column: pa.ChunkedArray, end: int) -> pa.Array:
    """The first (``end=0``) or last (``end=-1``) non-empty chunk of a column with rows, found from that end without
    making a Python object of every chunk (a memory-mapped table can have tens of thousands)."""
    indices = range(column.num_chunks) if end == 0 else range(column.num_chunks - 1, -1, -1)
    return next(chunk for chunk in map(column.chunk, indices) if len(chunk))
