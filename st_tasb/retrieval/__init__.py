"""Dense retrieval with faiss and trec_eval-compatible metrics.

Used by mining (dense candidates) and by evaluation (during training, in the demo and from the command line).
"""
