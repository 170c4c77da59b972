"""train(): the SentenceTransformerTrainer run wired with the TAS-Balanced sampler, loss, collator and card."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from st_tasb.data.beir import load_beir
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.teachers import BiEncoderTeacher
from st_tasb.training.checkpoints import checkpoint_problem
from st_tasb.training.inbatch_teachers import build_inbatch_teacher
from st_tasb.training.launch import runs_on_cpu
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler
from st_tasb.training.settings import TrainingSettings
from st_tasb.training.trainer import train


@dataclass
class Parts:
    queries: TextStore
    corpus: TextStore
    table: TeacherScoreTable
    clusters: QueryClusters
    teacher: BiEncoderTeacher


@pytest.fixture(scope="module")
def parts(scifact_dir: Path, small_student_path: str) -> Parts:
    """48 scifact-train queries, their judged passages plus 100 others, 6 random negatives per positive scored by
    a cached bi-encoder teacher (the 2-layer MiniLM), and 3 query clusters of its embeddings."""
    data = load_beir(scifact_dir, "train")
    query_ids = sorted(data.qrels)[:48]
    judged = sorted({d for q in query_ids for d in data.qrels[q]})
    others = [d for d in data.corpus.ids.to_pylist()[:200] if d not in set(judged)][:100]
    queries = TextStore.from_records([(q, data.queries[q]) for q in query_ids], name="queries")
    corpus = TextStore.from_records([(d, data.corpus[d]) for d in judged + others], name="corpus")
    teacher = BiEncoderTeacher(SentenceTransformer(small_student_path, device="cpu"), passage_max_length=32, device="cpu")
    cache = teacher.build_cache(queries, corpus, show_progress_bar=False)
    rng = np.random.default_rng(0)
    rows = [(q, p, n) for q in query_ids for p in data.qrels[q] for n in rng.choice(others, 6, replace=False)]
    q_pos, p_pos, n_pos = (np.asarray(store.positions([r[i] for r in rows])) for i, store in enumerate((queries, corpus, corpus)))
    query_vectors = cache.queries[q_pos]
    table = TeacherScoreTable.from_scores(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        np.einsum("ij,ij->i", query_vectors, cache.corpus[p_pos]), np.einsum("ij,ij->i", query_vectors, cache.corpus[n_pos]),
    )
    clusters = QueryClusters.fit_embeddings(np.asarray(cache.queries), query_ids, k=3)
    return Parts(queries, corpus, table, clusters, teacher)


class RecordSampler(TrainerCallback):
    """Keeps the training dataloader's batch sampler and the batch sizes it yields."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.sampler = train_dataloader.batch_sampler
        self.dataset = train_dataloader.dataset
        self.batch_sizes = {len(batch) for batch in self.sampler}


def settings(**overrides) -> TrainingSettings:
    return TrainingSettings(**{"batch_size": 8, "max_steps": 3, "learning_rate": 1e-4, "logging_steps": 1, "cpu": True,
                               **overrides})


def test_train_runs_tas_balanced_and_saves_a_model_with_its_card(parts: Parts, small_student: SentenceTransformer,
                                                                 tmp_path: Path) -> None:
    """Guards the wiring: the Trainer uses TopicAwareBalancedBatchSampler with the settings' bins and clusters per
    batch, both loss components are logged at every step, the student learns while the frozen teacher does not,
    and the output folder is a loadable SentenceTransformer whose card records the settings."""
    recorder = RecordSampler()
    teacher_before = [p.detach().clone() for p in parts.teacher.parameters()]
    student_before = [p.detach().clone() for p in small_student.parameters()]
    result = train(
        small_student, parts.table, parts.queries, parts.corpus, tmp_path / "model", clusters=parts.clusters,
        inbatch_teacher=parts.teacher, settings=settings(n_bins=4, clusters_per_batch=2), callbacks=[recorder],
        local_files_only=True,
    )
    sampler = recorder.sampler
    assert isinstance(sampler, TopicAwareBalancedBatchSampler)
    assert (sampler.n_bins, sampler.clusters_per_batch, sampler.topic_aware, sampler.balanced) == (4, 2, True, True)
    assert recorder.batch_sizes == {8}
    assert result.global_step == 3
    logged = [entry for entry in result.log_history if "loss" in entry]
    assert len(logged) == 3 and all({"pairwise", "in_batch"} <= set(entry) for entry in logged)
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, parts.teacher.parameters()))
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(student_before, small_student.parameters()))

    assert not (result.model_dir / "checkpoints").exists()  # no checkpoint asked for, no empty folder left
    loaded = SentenceTransformer(str(result.model_dir), device="cpu")
    assert np.allclose(loaded.encode(["a claim"]), small_student.encode(["a claim"]), atol=1e-5)
    card = json.loads((result.model_dir / "tas_balanced.json").read_text())
    assert card["settings"]["n_bins"] == 4 and card["settings"]["alpha"] == 0.75 and card["settings"]["k"] == 3
    assert card["data"]["training pairs"] == len(parts.table) and card["data"]["training queries"] == 48
    assert card["teachers"]["in-batch"].startswith("BiEncoderTeacher(")
    readme = (result.model_dir / "README.md").read_text()
    assert "## TAS-Balanced training" in readme and "tas-balanced" in readme.split("---")[1]


def test_ablation_switches_reach_the_sampler(parts: Parts, small_student: SentenceTransformer, tmp_path: Path) -> None:
    """Guards the ablations: random batches need no clusters, uniform pairs switch balancing off, and without an
    in-batch teacher only the pairwise term is trained and alpha is recorded as unused. Also the default logging
    (every 5 % of the run): a 2-step run logs its loss at both steps."""
    recorder = RecordSampler()
    result = train(
        small_student, parts.table, parts.queries, parts.corpus, tmp_path / "model",
        settings=settings(topic_aware=False, balanced=False, max_steps=2, logging_steps=TrainingSettings.logging_steps),
        callbacks=[recorder],
        local_files_only=True,
    )
    assert (recorder.sampler.topic_aware, recorder.sampler.balanced) == (False, False)
    logged = [entry for entry in result.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert all("pairwise" in entry and "in_batch" not in entry for entry in logged)
    card = json.loads((result.model_dir / "tas_balanced.json").read_text())
    assert card["settings"]["alpha"] is None and card["settings"]["topic_aware"] is False
    assert card["teachers"]["in-batch"].startswith("none")


@pytest.mark.parametrize("topic_aware", [True, False], ids=["topic-aware", "no-duplicates"])
def test_mnrl_baseline_trains_on_the_tables_query_positive_rows(parts: Parts, small_student: SentenceTransformer,
                                                                 tmp_path: Path, topic_aware: bool) -> None:
    """Guards the baseline run through the product: loss mnrl trains sentence-transformers' MNRL (cosine x 20) on
    the table's distinct (query, positive) texts with topic-aware batches of one cluster, or NoDuplicatesBatchSampler;
    no batch repeats a text; the saved model says it scores by cosine, and the card records no teacher."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from st_tasb.training.anchor_sampler import TopicAwareBatchSampler

    recorder = RecordSampler()
    result = train(
        small_student, parts.table, parts.queries, parts.corpus, tmp_path / "model",
        clusters=parts.clusters if topic_aware else None, inbatch_teacher=parts.teacher,
        settings=settings(loss="mnrl", topic_aware=topic_aware), callbacks=[recorder], local_files_only=True,
    )
    sampler = recorder.sampler
    assert isinstance(sampler, TopicAwareBatchSampler if topic_aware else NoDuplicatesBatchSampler)
    rows = recorder.dataset
    assert rows.column_names == ["anchor", "positive"]
    expected = {(parts.queries[q], parts.corpus[p]) for q, p in zip(parts.table.dataset["query_id"], parts.table.dataset["positive_id"])}
    assert set(zip(rows["anchor"], rows["positive"])) == expected and len(rows) == len(expected)
    for batch in sampler:
        texts = [rows[i]["anchor"] for i in batch] + [rows[i]["positive"] for i in batch]
        assert len(set(texts)) == len(texts)
    assert SentenceTransformer(str(result.model_dir), device="cpu").similarity_fn_name == "cosine"
    card = json.loads((result.model_dir / "tas_balanced.json").read_text())
    assert (card["settings"]["loss"], card["settings"]["similarity"], card["settings"]["similarity_scale"]) == ("mnrl", "cosine", 20.0)
    assert card["settings"]["alpha"] is None and list(card["teachers"]) == ["none"]


def test_listwise_recipe_logs_its_terms_and_records_its_similarity(parts: Parts, small_student: SentenceTransformer,
                                                                   tmp_path: Path) -> None:
    """Guards the options of the st-tasb recipe inside train(): the loss gets cosine x 20, the KL in-batch term and
    the contrastive term; all three components are logged; the model is saved scoring by cosine and the card
    records every option."""
    result = train(
        small_student, parts.table, parts.queries, parts.corpus, tmp_path / "model", clusters=parts.clusters,
        inbatch_teacher=parts.teacher, local_files_only=True,
        settings=settings(similarity="cosine", similarity_scale=20.0, inbatch_loss="kl", alpha=1.0, contrastive_weight=0.5),
    )
    logged = [entry for entry in result.log_history if "loss" in entry]
    assert logged and all({"pairwise", "in_batch", "contrastive"} <= set(entry) for entry in logged)
    assert SentenceTransformer(str(result.model_dir), device="cpu").similarity_fn_name == "cosine"
    card = json.loads((result.model_dir / "tas_balanced.json").read_text())
    assert {k: card["settings"][k] for k in ("similarity", "similarity_scale", "inbatch_loss", "contrastive_weight")} == {
        "similarity": "cosine", "similarity_scale": 20.0, "inbatch_loss": "kl", "contrastive_weight": 0.5}


def test_min_margin_leaves_out_small_margins_and_says_so(parts: Parts, small_student: SentenceTransformer,
                                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Guards the hard margin in training: pairs below min_margin never reach the sampler (its dataset has only
    the kept pairs), the removed pairs and emptied queries are logged as a warning, and the card records the
    threshold and the counts."""
    margins = np.asarray(parts.table.dataset["margin"])
    threshold = float(np.quantile(margins, 0.9))  # removes 90 % of the pairs: some queries lose all of theirs
    kept, report = parts.table.drop_small_margins(threshold)
    assert report.queries_emptied > 0
    recorder = RecordSampler()
    with caplog.at_level("WARNING", logger="st_tasb.training.trainer"):
        result = train(small_student, parts.table, parts.queries, parts.corpus, tmp_path / "model",
                       clusters=parts.clusters, settings=settings(min_margin=threshold, max_steps=1),
                       callbacks=[recorder], local_files_only=True)
    assert len(recorder.sampler.index.query_start) == kept.num_queries
    assert recorder.sampler.index.query_length.sum() == len(kept) == report.pairs_before - report.pairs_removed
    assert "lost every pair and leave training" in caplog.text and str(report) in caplog.text
    card = json.loads((result.model_dir / "tas_balanced.json").read_text())
    assert card["settings"]["min_margin"] == threshold and card["data"]["hard margin"] == str(report)
    assert card["data"]["training pairs"] == len(kept)
    assert "hard margin (pairs with a smaller teacher margin left out)" in (result.model_dir / "README.md").read_text()


def test_gradcache_gives_the_same_first_step_loss(parts: Parts, small_student_path: str, tmp_path: Path) -> None:
    """Guards the GradCache option: the cached loss is used and, on the same first batch of the same model (dropout
    off), its pairwise and in-batch components equal those of the plain loss."""
    firsts = []
    for mini_batch in (None, 4):
        student = SentenceTransformer(small_student_path, device="cpu")
        student.max_seq_length = 32
        for module in student.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        result = train(
            student, parts.table, parts.queries, parts.corpus, tmp_path / f"model-{mini_batch}", clusters=parts.clusters,
            inbatch_teacher=parts.teacher, settings=settings(max_steps=1, gradcache_mini_batch_size=mini_batch),
            local_files_only=True,
        )
        firsts.append(next(entry for entry in result.log_history if "loss" in entry))
        card = (result.model_dir / "README.md").read_text()  # sentence-transformers names the loss class
        assert ("CachedDualTeacherMarginMSELoss" in card) == (mini_batch is not None)
    assert firsts[0]["pairwise"] == pytest.approx(firsts[1]["pairwise"], rel=1e-3)
    assert firsts[0]["in_batch"] == pytest.approx(firsts[1]["in_batch"], rel=1e-3)


def test_checkpoints_are_written_and_training_resumes(parts: Parts, small_student_path: str, tmp_path: Path) -> None:
    """Guards --save-steps / --resume: checkpoints land in OUTPUT/checkpoints and a longer run resumes from the
    latest one instead of starting over."""
    output = tmp_path / "model"
    first = train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus, output,
                  clusters=parts.clusters, settings=settings(max_steps=2, save_steps=2), local_files_only=True)
    assert first.global_step == 2 and (output / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus,
                    output, clusters=parts.clusters, settings=settings(max_steps=3, save_steps=2),
                    resume_from_checkpoint=True, local_files_only=True)
    assert resumed.global_step == 3
    assert [entry["step"] for entry in resumed.log_history if "loss" in entry] == [1, 2, 3]  # steps 1-2 come from the checkpoint


def test_a_failed_run_leaves_no_empty_output(parts: Parts, small_student: SentenceTransformer, tmp_path: Path) -> None:
    """Guards against a failed train() leaving an empty checkpoints/ (and output) folder behind, which the next run
    would take for an earlier run's: a callback that fails at the first step stands for any error in training."""

    class Fails(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise RuntimeError("out of memory, say")

    output = tmp_path / "model"
    with pytest.raises(RuntimeError, match="out of memory"):
        train(small_student, parts.table, parts.queries, parts.corpus, output, clusters=parts.clusters,
              settings=settings(save_steps=2), callbacks=[Fails()], local_files_only=True)
    assert not output.exists()


def test_a_full_disk_while_saving_is_named_and_leaves_no_half_model(parts: Parts, small_student: SentenceTransformer,
                                                                    tmp_path: Path, monkeypatch) -> None:
    """Guards the final save: when the disk fills while the model is written (here: after its first file), the error
    names the output folder and the cause, says where the last checkpoint is, and no half-written model is left
    under the output's name or beside it."""
    import errno

    save = small_student.save_pretrained

    def fills_the_disk(path, *args, **kwargs):
        if "checkpoint-" in str(path):  # the Trainer's checkpoints are written as usual
            return save(path, *args, **kwargs)
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(small_student, "save_pretrained", fills_the_disk)
    output = tmp_path / "model"
    with pytest.raises(OSError, match=rf"could not save the trained model to {output} \(No space left on device\); "
                                      r"nothing of it was written there; the last checkpoint is .*checkpoint-2"):
        train(small_student, parts.table, parts.queries, parts.corpus, output, clusters=parts.clusters,
              settings=settings(max_steps=2, save_steps=2), local_files_only=True)
    assert not (output / "config.json").exists() and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_resume_refuses_another_runs_checkpoints_and_skips_a_damaged_one(parts: Parts, small_student_path: str,
                                                                        tmp_path: Path, caplog) -> None:
    """Guards --resume against silent mix-ups: checkpoints of a run with other settings are refused naming the
    differing setting; a truncated checkpoint, one killed before its weights were written, or before its
    trainer_state.json was, is skipped with a warning for the previous complete one (not transformers' "no file
    named model.safetensors"), and named with that one when it is given by path."""
    output = tmp_path / "model"
    train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus, output,
          clusters=parts.clusters, settings=settings(max_steps=2, save_steps=1), local_files_only=True)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: checkpoints 0.0001, now 0.0002\)"):
        train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus, output,
              clusters=parts.clusters, settings=settings(max_steps=3, save_steps=1, learning_rate=2e-4),
              resume_from_checkpoint=True, local_files_only=True)
    last = output / "checkpoints" / "checkpoint-2"
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"checkpoint-2 is damaged .*; resume from .*checkpoint-1"):
        train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus, output,
              clusters=parts.clusters, settings=settings(max_steps=3, save_steps=1), resume_from_checkpoint=str(last),
              local_files_only=True)
    weights.unlink()  # killed while writing: the config files are there, the weights are not
    assert "no model weights" in checkpoint_problem(last)
    copy = shutil.copytree(output / "checkpoints" / "checkpoint-1", tmp_path / "checkpoint-1")
    assert checkpoint_problem(copy) is None
    (copy / "trainer_state.json").write_text('{"global_step": ')  # killed while writing its last file
    assert "no complete trainer_state.json" in checkpoint_problem(copy)
    with caplog.at_level("WARNING", logger="st_tasb.training.trainer"):
        resumed = train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus,
                        output, clusters=parts.clusters, settings=settings(max_steps=3, save_steps=1),
                        resume_from_checkpoint=True, local_files_only=True)
    assert re.search(r"skipping checkpoint .*checkpoint-2: it is incomplete \(no model weights.*resuming from "
                     r"checkpoint-1", caplog.text)
    assert resumed.global_step == 3 and checkpoint_problem(last) is None  # step 2 written again, complete
    assert [entry["step"] for entry in resumed.log_history if "loss" in entry] == [1, 2, 3]


def test_topic_aware_training_without_clusters_is_refused(parts: Parts, small_student: SentenceTransformer,
                                                          tmp_path: Path) -> None:
    """Guards a silent fallback: topic-aware batches without clusters must fail, not train on random batches."""
    with pytest.raises(ValueError, match="clusters"):
        train(small_student, parts.table, parts.queries, parts.corpus, tmp_path / "m", settings=settings())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 30, "clusters_per_batch": 4}, "multiple of clusters_per_batch"),
        ({"alpha": -1.0}, "alpha must be a finite number >= 0, not -1.0"),  # LossTerms checks the terms
        ({"n_bins": 0}, "n_bins=0"),
        ({"fp16": True, "bf16": True}, "one of fp16 and bf16"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"min_margin": float("inf")}, "min_margin=inf is out of range"),
        ({"min_margin": "0.5"}, "min_margin='0.5' must be float"),
    ],
)
def test_invalid_settings_are_named(overrides: dict, message: str) -> None:
    """Guards settings validation: a bad value fails at once, naming the setting, not deep inside the Trainer."""
    with pytest.raises(ValueError, match=message):
        TrainingSettings(**overrides)


def test_build_inbatch_teacher_choices_and_cache_reuse(parts: Parts, small_student_path: str, tmp_path: Path) -> None:
    """Guards the in-batch teacher choice: none gives no teacher, a teacher needs a model, and a bi-encoder cache
    folder is reused for the same stores while another corpus gets a file of its own."""
    assert build_inbatch_teacher("none", None) is None
    with pytest.raises(ValueError, match="needs a model"):
        build_inbatch_teacher("colbert", None)
    with pytest.raises(ValueError, match="unknown in-batch teacher"):
        build_inbatch_teacher("kl-divergence", "x")  # type: ignore[arg-type]
    cache_dir = tmp_path / "cache"
    first = build_inbatch_teacher("bi-encoder", small_student_path, queries=parts.queries, corpus=parts.corpus,
                                  cache_dir=cache_dir, device="cpu", show_progress_bar=False)
    (corpus_file,) = cache_dir.glob("corpus-*.npy")
    stamp = corpus_file.stat().st_mtime_ns
    again = build_inbatch_teacher("bi-encoder", small_student_path, queries=parts.queries, corpus=parts.corpus,
                                  cache_dir=cache_dir, device="cpu", show_progress_bar=False)
    assert corpus_file.stat().st_mtime_ns == stamp
    assert np.array_equal(np.asarray(first.cache.corpus), np.asarray(again.cache.corpus))
    fewer = TextStore(parts.corpus.dataset.select(range(10)), name="corpus")
    other = build_inbatch_teacher("bi-encoder", small_student_path, queries=parts.queries, corpus=fewer,
                                  cache_dir=cache_dir, device="cpu", show_progress_bar=False)
    assert other.cache.corpus.shape[0] == 10 and len(list(cache_dir.glob("corpus-*.npy"))) == 2
    assert np.allclose(np.asarray(other.cache.corpus), np.asarray(first.cache.corpus)[:10], atol=1e-5)


def test_multi_process_launch_on_a_cpu_machine_runs_as_cpu_ddp(monkeypatch: pytest.MonkeyPatch):
    """Guards CPU DDP: accelerate and transformers set up gloo DDP only for runs declared to be on the CPU,
    so a torchrun / accelerate launch on a machine without CUDA must declare it even without --cpu (else every
    process trains alone and main_process_first() does not wait)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not runs_on_cpu() and runs_on_cpu(cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runs_on_cpu()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not runs_on_cpu() and runs_on_cpu(cpu=True)


@pytest.mark.parametrize("kind", ["bm25", "fused"])
def test_bm25_and_fused_teachers_teach_in_batch(parts: Parts, small_student_path: str, tmp_path: Path,
                                                kind: str) -> None:
    """Guards the hybrid in-batch teachers through train: build_inbatch_teacher gives BM25 (the corpus's statistics)
    or the fusion of BM25 and the cached bi-encoder, the st-tasb recipe logs its in-batch KL term at every step, the
    card names the teacher, and the teacher's batch scores equal its own pair scores."""
    teacher = build_inbatch_teacher(kind, small_student_path if kind == "fused" else None, queries=parts.queries,
                                    corpus=parts.corpus, device="cpu", fusion_weight=0.7 if kind == "fused" else None,
                                    cache_dir=tmp_path / "cache", show_progress_bar=False)
    result = train(SentenceTransformer(small_student_path, device="cpu"), parts.table, parts.queries, parts.corpus,
                   tmp_path / "model", clusters=parts.clusters, inbatch_teacher=teacher,
                   settings=settings(recipe="st-tasb"), local_files_only=True)
    logged = [entry for entry in result.log_history if "loss" in entry]
    assert len(logged) == 3 and all("in_batch" in entry and "contrastive" in entry for entry in logged)
    assert result.card.teachers["in-batch"].startswith(type(teacher).__name__)
    labels = {"margin": torch.zeros(2), "query_index": torch.tensor([0, 1]), "positive_index": torch.tensor([0, 1]),
              "negative_index": torch.tensor([2, 3]),
              "texts": {"query": parts.queries.texts(np.array([0, 1])), "positive": parts.corpus.texts(np.array([0, 1])),
                        "negative": parts.corpus.texts(np.array([2, 3]))}}
    batch = teacher(labels)
    pair = teacher.score_pairs(parts.queries, parts.corpus, np.array([1]), np.array([3]))
    assert batch.shape == (2, 4) and batch[1, 3].item() == pytest.approx(float(pair[0]), rel=1e-5)


def test_the_in_batch_teacher_options_are_checked_before_any_work() -> None:
    """Guards the hybrid teacher's options: a fused teacher without its weight, a weight for another teacher, a
    scale BM25 does not take and an unknown kind are each one error naming the option."""
    from st_tasb.training.inbatch_teachers import check_inbatch_teacher

    for arguments, message in [
        (("fused", "m"), "needs --fusion-weight"),
        (("bm25", None, 1.0, 0.5), "--fusion-weight is for the fused in-batch teacher, not bm25"),
        (("bm25", None, 10.0), "only the bi-encoder and fused in-batch teachers take a scale, not the bm25 one"),
        (("splade", "m"), "unknown in-batch teacher 'splade'; choose none, bi-encoder, colbert, cross-encoder, bm25"),
    ]:
        kind, model, *rest = arguments
        options = dict(zip(("scale", "fusion_weight"), rest))
        with pytest.raises(ValueError, match=re.escape(message)):
            check_inbatch_teacher(kind, model, **options)
