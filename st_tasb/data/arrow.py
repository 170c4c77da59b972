"""Arrow views of ``datasets.Dataset`` objects, through public API only.

Example:
    >>> from datasets import Dataset
    >>> dataset = Dataset.from_dict({"id": [1, 2, 3]})
    >>> rows(dataset) is dataset.data, rows(dataset.select([2, 0])).column("id").to_pylist()
    (True, [3, 1])
"""

from __future__ import annotations

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
    if mapped.num_rows == own.num_rows and mapped.equals(own.table):
        return own
    return InMemoryTable(mapped)
