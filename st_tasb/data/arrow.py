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
    """Whether ``a`` holds ``b``'s rows without a copy: as many rows, in no buffer that ``b`` does not hold.

    A slice or re-chunking of ``b`` (what ``datasets`` returns without an indices mapping) reuses ``b``'s buffers;
    rows gathered through a mapping are in new ones. Nothing is read but the buffers' addresses.
    """

    def addresses(table: pa.Table) -> set[int]:
        return {
            buffer.address
            for column in table.columns
            for chunk in column.chunks
            for buffer in chunk.buffers()
            if buffer is not None
        }

    return a.num_rows == b.num_rows and addresses(a) <= addresses(b)
