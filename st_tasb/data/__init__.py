"""The bottom layer: texts, BEIR folders, TREC runs, model loading and the training-row column names.

Every other stage reads its inputs through here; this package imports no other part of st-tasb.
"""
