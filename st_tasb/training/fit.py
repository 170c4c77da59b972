"""``fit``: sentence-transformers' old ``model.fit`` call, run on the Trainer with the TAS-Balanced batches kept.

sentence-transformers 6 still offers ``model.fit(train_objectives=[(DataLoader, loss)], ...)``, but it
rebuilds the data from the DataLoader and drops a custom ``batch_sampler`` (it logs a warning), so a
DataLoader built with :class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler` silently trains
on random batches. :func:`fit` takes the same arguments and runs a ``SentenceTransformerTrainer`` with the
DataLoader's own sampler (as a class with its settings, and its seed, so the batches are the sampler's)
and its TAS-B collator (or one made for the model).

Example:
    >>> from torch.utils.data import DataLoader
    >>> loader = DataLoader(train_dataset, batch_sampler=TopicAwareBalancedBatchSampler(train_dataset, 32, True, seed=42))  # doctest: +SKIP
    >>> fit(model, [(loader, DualTeacherMarginMSELoss(model))], epochs=1, warmup_steps=100)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from torch import nn
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from st_tasb.data.compat import BaseEvaluator
from st_tasb.data.progress import progress_enabled
from st_tasb.training.collator import TASBDataCollator
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

SCHEDULERS = {
    "constantlr": "constant",
    "warmupconstant": "constant_with_warmup",
    "warmuplinear": "linear",
    "warmupcosine": "cosine",
    "warmupcosinewithhardrestarts": "cosine_with_restarts",
}
"""sentence-transformers' ``fit`` scheduler names (any case) -> the transformers schedule they are."""


def fit(
    model: SentenceTransformer,
    train_objectives: Iterable[tuple[DataLoader, nn.Module]],
    evaluator: BaseEvaluator | None = None,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    scheduler: str = "WarmupLinear",
    warmup_steps: int = 10000,
    optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
    optimizer_params: dict[str, Any] | None = None,
    weight_decay: float = 0.01,
    evaluation_steps: int = 0,
    output_path: str | None = None,
    save_best_model: bool = True,
    max_grad_norm: float = 1.0,
    use_amp: bool = False,
    callback: Callable[[float, int, int], None] | None = None,
    show_progress_bar: bool = True,
    checkpoint_path: str | None = None,
    checkpoint_save_steps: int = 500,
    checkpoint_save_total_limit: int = 0,
    resume_from_checkpoint: bool = False,
) -> SentenceTransformerTrainer:
    """Train ``model`` like ``model.fit``, with the DataLoader's TAS-Balanced sampler and collator kept.

    The arguments are those of sentence-transformers' ``fit``. ``train_objectives`` holds one
    ``(DataLoader, loss)`` whose DataLoader has a :class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler`
    as ``batch_sampler``. With ``evaluator`` and ``evaluation_steps``, the model is evaluated every that many
    steps and, with ``save_best_model``, the best checkpoint is the one kept; ``callback(score, epoch, steps)``
    receives the primary metric after each evaluation. The trained model is saved to ``output_path`` if given.

    Returns:
        The trainer that ran (its ``state.log_history`` holds the losses and evaluations).

    Raises:
        ValueError: for several objectives, an unknown scheduler, or ``optimizer_params`` without ``lr``.
        TypeError: for a DataLoader without the TAS-Balanced sampler (use ``model.fit`` or the Trainer for those).
    """
    objectives = list(train_objectives)
    if len(objectives) != 1:
        raise ValueError(f"st_tasb.fit trains one (DataLoader, loss) objective, not {len(objectives)}")
    loader, loss = objectives[0]
    sampler = loader.batch_sampler
    if not isinstance(sampler, TopicAwareBalancedBatchSampler):
        raise TypeError(
            "st_tasb.fit needs DataLoader(train_dataset, batch_sampler=TopicAwareBalancedBatchSampler(...)); this "
            f"DataLoader's batch sampler is a {type(sampler).__name__}"
        )
    schedule = SCHEDULERS.get(scheduler.lower())
    if schedule is None:
        raise ValueError(f"unknown scheduler {scheduler!r}; fit knows {', '.join(SCHEDULERS)}")
    optimizer_params = {"lr": 2e-5} if optimizer_params is None else dict(optimizer_params)
    if "lr" not in optimizer_params:
        raise ValueError("optimizer_params needs the learning rate, 'lr'")
    evaluating = evaluator is not None and evaluation_steps > 0
    keep_best = evaluating and save_best_model
    args = SentenceTransformerTrainingArguments(
        output_dir=checkpoint_path or "checkpoints/st-tasb-fit",
        per_device_train_batch_size=sampler.batch_size,
        batch_sampler=functools.partial(
            TopicAwareBalancedBatchSampler, n_bins=sampler.n_bins, clusters_per_batch=sampler.clusters_per_batch,
            topic_aware=sampler.topic_aware, balanced=sampler.balanced,
            separate_positives=sampler.separate_positives,
        ),
        dataloader_drop_last=sampler.drop_last,
        seed=sampler.seed,
        data_seed=sampler.seed,
        num_train_epochs=epochs,
        max_steps=steps_per_epoch * epochs if steps_per_epoch else -1,
        learning_rate=optimizer_params["lr"],
        lr_scheduler_type=schedule,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        fp16=use_amp,
        disable_tqdm=not progress_enabled(show_progress_bar),
        eval_strategy="steps" if evaluating else "no",
        eval_steps=evaluation_steps if evaluating else None,
        save_strategy="steps" if checkpoint_path is not None or keep_best else "no",
        save_steps=evaluation_steps if keep_best else checkpoint_save_steps,
        save_total_limit=checkpoint_save_total_limit or None,
        load_best_model_at_end=keep_best,
        metric_for_best_model=f"eval_{evaluator.primary_metric}" if keep_best else None,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="none",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=loader.dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=loader.collate_fn if isinstance(loader.collate_fn, TASBDataCollator) else TASBDataCollator.for_model(model),
        optimizer_cls_and_kwargs=(optimizer_class, {k: v for k, v in optimizer_params.items() if k != "lr"}),
        callbacks=[_ScoreCallback(callback, evaluator)] if callback is not None and evaluating else None,
    )
    trainer.train(resume_from_checkpoint=True if resume_from_checkpoint and checkpoint_path else None)
    if output_path is not None:
        model.save_pretrained(output_path)
    return trainer


class _ScoreCallback(TrainerCallback):
    """Calls ``fit``'s ``callback(score, epoch, steps)`` with the evaluator's primary metric after each evaluation."""

    def __init__(self, callback: Callable[[float, int, int], None], evaluator: BaseEvaluator) -> None:
        self.callback = callback
        self.metric = f"eval_{evaluator.primary_metric}"

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if metrics and self.metric in metrics:
            self.callback(metrics[self.metric], int(state.epoch or 0), state.global_step)
