"""st-tasb: TAS-Balanced dense retriever training for sentence-transformers."""

__version__ = "0.1.0"
