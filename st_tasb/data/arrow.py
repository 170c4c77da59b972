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
    """Whether two tables are views of the same rows in the same buffers (checked without reading the data)."""

    def layout(table: pa.Table) -> list[tuple[int, int, list[int | None]]]:
        return [
            (chunk.offset, len(chunk), [buffer.address if buffer is not None else None for buffer in chunk.buffers()])
            for column in table.columns
            for chunk in column.chunks
        ]

    return a.num_rows == b.num_rows and layout(a) == layout(b)
