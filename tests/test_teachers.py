"""In-batch teachers: ColBERT (original layout and multi-vector), cross-encoder, bi-encoder (live and cached), table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import BertConfig, BertModel, BertTokenizer

from st_tasb.data.texts import TextStore
from st_tasb.teachers import (
    BiEncoderTeacher,
    ColBERTModel,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    MissingScoreError,
    PrecomputedTeacher,
    late_interaction_scores,
)
from st_tasb.teachers.colbert import MultiVectorEncoder

QUERIES = ["what is a cell", "protein misfolding in yeast causes disease", "dna"]
PASSAGES = [
    "cells",
    "A cell is the basic structural and functional unit of all known living organisms, the smallest unit of life.",
    "Misfolded proteins aggregate in yeast cells under heat stress.",
    "The double helix.",
]


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str) -> BertTokenizer:
    """The MiniLM (BERT uncased) vocabulary as a slow tokenizer (the fast one ignores vocab_file in transformers 5)."""
    return BertTokenizer(vocab=str(Path(minilm_path) / "vocab.txt"))


def tiny_bert(vocab_size: int, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config).eval()


@pytest.fixture(scope="module")
def colbert_model(tokenizer: BertTokenizer) -> ColBERTModel:
    """The original checkpoint layout with random weights: a tiny BERT plus a 32 -> 16 compressor."""
    return ColBERTModel(tiny_bert(len(tokenizer)), compression_dim=16, base_name="tiny-bert")


def per_pair_colbert(
    model: ColBERTModel, tokenizer, query: str, passage: str, q_len: int, p_len: int, aug: int
) -> float:
    """One query and one passage, each encoded alone (no padding at all), scored by MaxSim."""
    q_ids = tokenizer(query, truncation=True, max_length=q_len)["input_ids"] + [tokenizer.mask_token_id] * aug
    d_ids = tokenizer(passage, truncation=True, max_length=p_len)["input_ids"]
    with torch.no_grad():
        q = model(torch.tensor([q_ids]), torch.ones(1, len(q_ids), dtype=torch.long))[0]
        d = model(torch.tensor([d_ids]), torch.ones(1, len(d_ids), dtype=torch.long))[0]
    return float((q @ d.T).max(dim=1).values.sum())


def test_late_interaction_masks_each_document_with_its_own_padding() -> None:
    """Guards the original ColBERT defect: off-diagonal pairs masked with another document's padding, and
    padding tokens (filled with huge values here) leaking into the max or the sum."""
    generator = torch.Generator().manual_seed(0)
    q_lengths, d_lengths = [2, 5, 3], [1, 6, 3, 4]
    queries = torch.full((3, 5, 4), 1000.0)
    docs = torch.full((4, 6, 4), 1000.0)
    for i, n in enumerate(q_lengths):
        queries[i, :n] = torch.randn(n, 4, generator=generator)
    for j, n in enumerate(d_lengths):
        docs[j, :n] = torch.randn(n, 4, generator=generator)
    q_mask = torch.arange(5)[None, :] < torch.tensor(q_lengths)[:, None]
    d_mask = torch.arange(6)[None, :] < torch.tensor(d_lengths)[:, None]
    scores = late_interaction_scores(queries, q_mask, docs, d_mask)
    expected = torch.tensor(
        [
            [float((queries[i, :qn] @ docs[j, :dn].T).max(dim=1).values.sum()) for j, dn in enumerate(d_lengths)]
            for i, qn in enumerate(q_lengths)
        ]
    )
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected)


def test_colbert_batched_scores_equal_per_pair_scores(colbert_model: ColBERTModel, tokenizer) -> None:
    """Guards batching: queries and passages of very different lengths (and truncation, and the 8 [MASK]
    query augmentation of the released checkpoint) score exactly as each pair encoded on its own."""
    teacher = ColBERTTeacher(colbert_model, tokenizer=tokenizer, passage_max_length=12, batch_size=3, device="cpu")
    scores = teacher.score(QUERIES, PASSAGES)
    expected = torch.tensor(
        [[per_pair_colbert(colbert_model, tokenizer, q, p, 30, 12, 8) for p in PASSAGES] for q in QUERIES]
    )
    assert scores.shape == (3, 4)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def test_colbert_teacher_is_frozen(colbert_model: ColBERTModel, tokenizer) -> None:
    """Guards against a teacher that trains: no parameter requires grad, train() leaves it in eval mode (no
    dropout), and its scores carry no graph."""
    teacher = ColBERTTeacher(colbert_model, tokenizer=tokenizer, device="cpu")
    teacher.train()
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(module.training for module in teacher.modules())
    labels = {
        "margin": torch.zeros(2),
        "texts": {"query": QUERIES[:2], "positive": PASSAGES[:2], "negative": PASSAGES[2:]},
    }
    scores = teacher(labels)
    assert scores.shape == (2, 4) and not scores.requires_grad


def test_colbert_save_and_load_round_trip(colbert_model: ColBERTModel, tokenizer, tmp_path: Path) -> None:
    """Guards save_pretrained/from_pretrained: the folder holds the original layout (bert_model + compressor
    keys) and loads offline into a teacher that scores identically."""
    teacher = ColBERTTeacher(colbert_model, tokenizer=tokenizer, device="cpu")
    folder = teacher.save_pretrained(tmp_path / "colbert")
    config = json.loads((folder / "config.json").read_text())
    assert config["bert_model"] == "tiny-bert" and config["compression_dim"] == 16
    from safetensors.torch import load_file

    keys = set(load_file(str(folder / "model.safetensors")))
    assert {"compressor.weight", "compressor.bias"} <= keys and all(
        k.startswith(("bert_model.", "compressor.")) for k in keys
    )
    loaded = ColBERTTeacher.from_pretrained(folder, device="cpu")
    torch.testing.assert_close(loaded.score(QUERIES, PASSAGES), teacher.score(QUERIES, PASSAGES))


def test_colbert_loads_the_released_checkpoint_layout(colbert_model: ColBERTModel, tokenizer, tmp_path: Path) -> None:
    """Guards loading the layout of sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco: a bare
    config.json naming the backbone, a pytorch_model.bin, and no tokenizer (it comes from the backbone)."""
    backbone = tmp_path / "backbone"
    colbert_model.bert_model.config.save_pretrained(backbone)
    tokenizer.save_pretrained(str(backbone))
    release = tmp_path / "release"
    release.mkdir()
    config = {"architectures": ["ColBERT"], "bert_model": str(backbone), "compression_dim": 16, "dropout": 0.0,
              "model_type": "ColBERT", "return_vecs": False, "trainable": True}  # fmt: skip
    (release / "config.json").write_text(json.dumps(config))
    torch.save(colbert_model.state_dict(), release / "pytorch_model.bin")
    loaded = ColBERTTeacher(str(release), device="cpu")
    expected = torch.tensor(
        [[per_pair_colbert(colbert_model, tokenizer, q, p, 30, 200, 8) for p in PASSAGES] for q in QUERIES]
    )
    torch.testing.assert_close(loaded.score(QUERIES, PASSAGES), expected, rtol=1e-4, atol=1e-4)


def test_colbert_weights_that_do_not_fit_are_named(colbert_model: ColBERTModel, tmp_path: Path) -> None:
    """Guards against a silently half-random teacher: missing weights raise an error naming them."""
    folder = colbert_model.save_pretrained(tmp_path / "broken")
    state = {k: v for k, v in colbert_model.state_dict().items() if not k.startswith("compressor.")}
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="compressor.weight"):
        ColBERTModel.from_pretrained(folder)


def test_colbert_rejects_a_tokenizer_of_another_vocabulary(tokenizer) -> None:
    """Guards against token ids that index past (or far short of) the teacher's embedding matrix."""
    small = ColBERTModel(tiny_bert(1000), compression_dim=8)
    with pytest.raises(ValueError, match=r"30522 tokens .* 1000 rows"):
        ColBERTTeacher(small, tokenizer=tokenizer, device="cpu")


def test_colbert_rejects_a_folder_of_no_known_layout(tmp_path: Path) -> None:
    """Guards against loading an arbitrary transformer as a ColBERT teacher with a random projection."""
    tiny_bert(100).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a ColBERT checkpoint"):
        ColBERTTeacher(str(tmp_path / "plain"), device="cpu")


@pytest.mark.skipif(MultiVectorEncoder is None, reason="multi-vector models need sentence-transformers >= 6")
def test_colbert_teacher_loads_a_multi_vector_encoder(minilm_path: str, tmp_path: Path) -> None:
    """Guards the sentence-transformers 6 / PyLate path: a saved multi-vector folder loads by path and scores
    each pair by MaxSim over that pair's own token embeddings."""
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    transformer = Transformer(minilm_path)
    del transformer.auto_model.encoder.layer[1:]
    transformer.auto_model.config.num_hidden_layers = 1
    projection = Dense(
        384, 16, bias=False, activation_function=torch.nn.Identity(), module_input_name="token_embeddings"
    )
    model = MultiVectorEncoder(
        modules=[transformer, projection, MultiVectorMask(), Normalize(module_input_name="token_embeddings")],
        device="cpu",
    )
    model.save(str(tmp_path / "mve"))
    teacher = ColBERTTeacher(str(tmp_path / "mve"), device="cpu")
    assert isinstance(teacher.encoder, MultiVectorEncoder)
    expected = torch.tensor(
        [
            [
                float((model.encode_query([q])[0] @ model.encode_document([p])[0].T).max(dim=1).values.sum())
                for p in PASSAGES
            ]
            for q in QUERIES
        ]
    )
    torch.testing.assert_close(teacher.score(QUERIES, PASSAGES), expected, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_cross_encoder_teacher_scores_every_pair_in_row_major_order(small_student_path: str) -> None:
    """Guards the B x P layout (query-major) and the raw-logit default (a sigmoid would squash the margins)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(small_student_path, num_labels=1, device="cpu")
    own_length = model.max_seq_length
    teacher = CrossEncoderTeacher(model, max_length=48, device="cpu")
    scores = teacher.score(QUERIES[:2], PASSAGES)
    assert model.max_seq_length == own_length  # the cap is temporary
    model.max_seq_length = 48
    expected = torch.tensor(
        [[float(model.predict([(q, p)], activation_fn=torch.nn.Identity())[0]) for p in PASSAGES] for q in QUERIES[:2]]
    )
    torch.testing.assert_close(scores.float(), expected, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.fixture(scope="module")
def bi_encoder(small_student_path: str) -> SentenceTransformer:
    return SentenceTransformer(small_student_path, device="cpu")


@pytest.fixture(scope="module")
def stores() -> tuple[TextStore, TextStore]:
    queries = TextStore.from_records([(f"q{i}", text) for i, text in enumerate(QUERIES)], name="queries")
    corpus = TextStore.from_records([(f"d{i}", text) for i, text in enumerate(PASSAGES)], name="corpus")
    return queries, corpus


def test_bi_encoder_live_scores_are_dot_products_of_the_embeddings(bi_encoder: SentenceTransformer) -> None:
    """Guards live scoring: each score is the dot product of the query's and the passage's own embeddings."""
    assert BiEncoderTeacher(bi_encoder, device="cpu").similarity_fn_name == bi_encoder.similarity_fn_name
    teacher = BiEncoderTeacher(bi_encoder, similarity_fn_name="dot", device="cpu")
    scores = teacher.score(QUERIES, PASSAGES)
    q = np.stack([bi_encoder.encode(q) for q in QUERIES])
    p = np.stack([bi_encoder.encode(p) for p in PASSAGES])
    np.testing.assert_allclose(scores.numpy(), q @ p.T, rtol=1e-4, atol=1e-4)


def test_cached_bi_encoder_scores_equal_live_scores(bi_encoder: SentenceTransformer, stores, tmp_path: Path) -> None:
    """Guards the cached path: in-batch scores looked up by row position equal the live scores of the texts,
    in the [B, 2B] layout, from memory and from a memory-mapped folder (even without the model)."""
    queries, corpus = stores
    live = BiEncoderTeacher(bi_encoder, similarity_fn_name="dot", device="cpu")
    labels = {
        "margin": torch.zeros(2),
        "texts": {"query": [QUERIES[2], QUERIES[0]], "positive": [PASSAGES[1], PASSAGES[3]], "negative": [PASSAGES[0], PASSAGES[2]]},
        "query_index": torch.tensor([2, 0]),
        "positive_index": torch.tensor([1, 3]),
        "negative_index": torch.tensor([0, 2]),
    }  # fmt: skip
    expected = live(labels)
    cached = BiEncoderTeacher(bi_encoder, similarity_fn_name="dot", device="cpu")
    cache = cached.build_cache(queries, corpus, path=tmp_path / "cache", chunk_size=2, show_progress_bar=False)
    assert isinstance(cache.corpus, np.memmap) and cache.corpus.shape == (4, 384)
    torch.testing.assert_close(cached(labels), expected, rtol=1e-5, atol=1e-5)
    model_free = BiEncoderTeacher(cache=tmp_path / "cache", similarity_fn_name="dot", device="cpu")
    torch.testing.assert_close(model_free(labels), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="with_indices=True"):
        model_free({"margin": labels["margin"], "texts": labels["texts"]})


def test_cached_embeddings_reuse_a_store_by_its_content(
    bi_encoder: SentenceTransformer, stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the work folder's teacher cache: another query set over the same corpus reads the passages' file back
    (no passage is encoded again) and encodes its own queries; a file left by a cut run is never read; every row
    equals the live embedding of its text."""
    from st_tasb.training.inbatch_teachers import cached_embeddings

    queries, corpus = stores
    teacher = BiEncoderTeacher(bi_encoder, similarity_fn_name="dot", device="cpu")
    cached_embeddings(teacher, queries, corpus, tmp_path, show_progress_bar=False)
    other = TextStore.from_records([("x", QUERIES[1]), ("y", "yeast")], name="queries")
    (tmp_path / f"queries-{teacher.query_max_length}tokens-{other.digest()}.partial.npy").write_bytes(b"cut off")
    encoded: list[str] = []
    original = teacher.encode_store
    monkeypatch.setattr(teacher, "encode_store", lambda store, **kw: encoded.append(store.name) or original(store, **kw))
    cache = cached_embeddings(teacher, other, corpus, tmp_path, show_progress_bar=False)
    assert encoded == ["queries"] and teacher.cache is cache
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.npy") if ".partial" not in p.name) == [
        "corpus", "queries", "queries"]
    np.testing.assert_allclose(cache.queries, bi_encoder.encode_query(["protein misfolding in yeast causes disease",
                                                                       "yeast"]), atol=1e-5)
    np.testing.assert_allclose(cache.corpus, bi_encoder.encode_document(PASSAGES), atol=1e-5)


def test_bi_encoder_cache_errors_are_clear(bi_encoder: SentenceTransformer) -> None:
    """Guards against caches built for other stores or another model being used silently."""
    with pytest.raises(ValueError, match="dimension 8 but the model's have 384"):
        BiEncoderTeacher(bi_encoder, cache=(np.zeros((2, 8)), np.zeros((3, 8))), device="cpu")
    with pytest.raises(ValueError, match="similarity_fn_name"):
        BiEncoderTeacher(cache=(np.zeros((2, 8)), np.zeros((3, 8))), device="cpu")
    teacher = BiEncoderTeacher(cache=EmbeddingCache(np.zeros((2, 8)), np.zeros((3, 8))), similarity_fn_name="dot")
    with pytest.raises(IndexError, match=r"row 3 is out of range for the cached corpus embeddings \(3 rows\)"):
        teacher.score_indices(torch.tensor([0]), torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="no model"):
        teacher.score(["q"], ["p"])


def test_precomputed_teacher_looks_up_every_pair(stores) -> None:
    """Guards the table lookup: the [B, 2B] batch matrix holds each (query, passage) pair's own score."""
    queries, corpus = stores
    table = {(f"q{q}", f"d{p}"): float(10 * q + p) for q in range(3) for p in range(4)}
    ids = list(table)
    teacher = PrecomputedTeacher.from_ids(
        [q for q, _ in ids], [p for _, p in ids], list(table.values()), queries=queries, corpus=corpus
    )
    labels = {"margin": torch.zeros(2), "query_index": torch.tensor([2, 0]), "positive_index": torch.tensor([1, 3]),
              "negative_index": torch.tensor([0, 2])}  # fmt: skip
    expected = torch.tensor([[table[(f"q{q}", f"d{p}")] for p in (1, 3, 0, 2)] for q in (2, 0)])
    torch.testing.assert_close(teacher(labels), expected)


def test_precomputed_teacher_names_missing_and_repeated_pairs(stores) -> None:
    """Guards against a silent zero for an unscored pair and against ambiguous repeated pairs."""
    queries, corpus = stores
    teacher = PrecomputedTeacher.from_ids(
        ["q0", "q0", "q1"], ["d0", "d1", "d0"], [1.0, 2.0, 3.0], queries=queries, corpus=corpus
    )
    with pytest.raises(MissingScoreError, match=r"1 \(query, passage\) pair.*\(query q1, passage d1\)"):
        teacher.score_indices(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(MissingScoreError, match="passage row 7"):
        PrecomputedTeacher([0], [0], [1.0]).score_indices(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match=r"\(query row 1, passage row 2\) has 2 scores"):
        PrecomputedTeacher([0, 1, 1], [2, 2, 2], [1.0, 2.0, 3.0])


def test_text_teacher_without_texts_names_what_is_missing(colbert_model: ColBERTModel, tokenizer) -> None:
    """Guards the error for labels that lack the teacher's inputs (e.g. the default collator's)."""
    teacher = ColBERTTeacher(colbert_model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match="no 'texts'"):
        teacher({"margin": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"lacks \['negative'\]"):
        teacher({"margin": torch.zeros(1), "texts": {"query": ["q"], "positive": ["p"]}})
