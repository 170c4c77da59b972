"""The names of a training row's columns: written by the training dataset, batched by the collator, read by
the in-batch teachers (as keys of the labels dict).

Example:
    >>> dict(zip(TEXT_COLUMNS, INDEX_COLUMNS))
    {'query': 'query_index', 'positive': 'positive_index', 'negative': 'negative_index'}
"""

TEXT_COLUMNS = ("query", "positive", "negative")
"""The texts of a row: the query, its positive passage and its negative passage."""

INDEX_COLUMNS = ("query_index", "positive_index", "negative_index")
"""The row positions of those texts in the queries and corpus stores (``with_indices=True``)."""
