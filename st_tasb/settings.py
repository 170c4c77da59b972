"""The hyper-parameters of a TAS-Balanced run, kept apart from :mod:`st_tasb.train` so that reading them
(``st-tasb train --help``, config files) does not load torch.

Example:
    >>> TrainingSettings(batch_size=64, clusters_per_batch=2).sampler_kwargs()
    {'n_bins': 10, 'clusters_per_batch': 2, 'topic_aware': True, 'balanced': True}
    >>> TrainingSettings(batch_size=30, clusters_per_batch=4)
    Traceback (most recent call last):
    ...
    ValueError: batch_size (30) must be a multiple of clusters_per_batch (4)
    >>> TrainingSettings.of(TrainingSettings(alpha=0.5)).alpha
    0.5
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from st_tasb.cli.arguments import option


@dataclass
class TrainingSettings:
    """The hyper-parameters of a TAS-Balanced run; defaults are the paper's (Hofstätter et al., 2021).

    Raises:
        ValueError: for values out of range, naming the setting.
    """

    batch_size: int = option(32, help="queries per batch, b; every batch has exactly this many (the paper: 32)")
    learning_rate: float = option(7e-6, help="peak learning rate of Adam(W) (the paper: 7e-6)")
    epochs: float = option(1.0, help="passes over the training queries (each query once per epoch)")
    max_steps: int | None = option(None, help="stop after this many optimizer steps; overrides --epochs")
    warmup: float = option(0.0, help="learning-rate warmup: a number of steps (>= 1) or a fraction of training (< 1)")
    lr_scheduler: str = option("cosine", help="transformers learning-rate schedule: cosine, linear, constant, ...")
    weight_decay: float = option(0.0, help="AdamW weight decay (the paper: none)")
    alpha: float = option(0.75, help="weight of the in-batch Margin-MSE term (the paper: 0.75); unused without an in-batch teacher")
    n_bins: int = option(10, help="margin bins per query for balanced pair sampling, h (the paper: 10)")
    clusters_per_batch: int = option(1, help="topic clusters per batch, n; batch_size must be a multiple (the paper: 1)")
    random_batches: bool = option(False, help="ablation: batches of random queries instead of one topic cluster")
    uniform_pairs: bool = option(False, help="ablation: draw each query's pair uniformly instead of balanced over margin bins")
    seed: int = option(42, help="random seed of the model initialisation and of the batch sampler")
    fp16: bool = option(False, help="fp16 mixed precision (CUDA only)")
    bf16: bool = option(False, help="bf16 mixed precision (CUDA with bf16 support, or recent CPUs)")
    gradcache_mini_batch_size: int | None = option(
        None, help="embed each batch in mini-batches of this size with gradient caching (large batches, little memory)"
    )
    logging_steps: int = option(50, help="log the loss and its pairwise / in_batch components every N steps")
    save_steps: int | None = option(None, help="write a resumable checkpoint every N steps into OUTPUT/checkpoints")
    dataloader_workers: int = option(0, help="DataLoader worker processes")
    cpu: bool = option(False, help="train on the CPU even when CUDA is available")

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "warmup": self.warmup >= 0,
            "weight_decay": self.weight_decay >= 0,
            "alpha": self.alpha >= 0,
            "n_bins": self.n_bins >= 1,
            "clusters_per_batch": self.clusters_per_batch >= 1,
            "gradcache_mini_batch_size": self.gradcache_mini_batch_size is None or self.gradcache_mini_batch_size >= 1,
            "logging_steps": self.logging_steps >= 1,
            "save_steps": self.save_steps is None or self.save_steps >= 1,
            "dataloader_workers": self.dataloader_workers >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(", ".join(f"{name}={getattr(self, name)!r} is out of range" for name in bad))
        if self.batch_size % self.clusters_per_batch:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of clusters_per_batch ({self.clusters_per_batch})"
            )
        if self.fp16 and self.bf16:
            raise ValueError("choose one of fp16 and bf16")

    @classmethod
    def of(cls, options: object) -> TrainingSettings:
        """The settings carried by ``options``, any object with these fields (e.g. parsed options of a
        command whose arguments extend this class)."""
        return cls(**{field.name: getattr(options, field.name) for field in dataclasses.fields(cls)})

    def sampler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~st_tasb.sampler.TopicAwareBalancedBatchSampler` these settings imply."""
        return {
            "n_bins": self.n_bins,
            "clusters_per_batch": self.clusters_per_batch,
            "topic_aware": not self.random_batches,
            "balanced": not self.uniform_pairs,
        }
