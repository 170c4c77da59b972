"""How a training run is launched: on which device, with how many processes, and the log line that says so.

One process, ``torchrun`` or ``accelerate launch``: :func:`process_state` gives the accelerate state before the
Trainer exists, :func:`runs_on_cpu` whether gloo DDP on the CPU is meant, :class:`LaunchReport` logs the launch once,
and :func:`main_process_threads` lends the CPU to the main process while the others wait.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import PartialState
from transformers import TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)


def runs_on_cpu(cpu: bool = False) -> bool:
    """Whether training runs on the CPU: when asked (``cpu``), or when several processes were launched
    (``torchrun`` / ``accelerate launch``: ``WORLD_SIZE`` > 1) on a machine without CUDA.

    accelerate and transformers set up gloo DDP only for runs declared to be on the CPU; without that
    declaration every process of a CPU launch would train alone on the whole dataset.
    """
    return cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def process_state(cpu: bool = False) -> PartialState:
    """The accelerate process state of this run (distributed when launched so, CPU runs included), for
    ``main_process_first()`` and ``is_main_process`` before the Trainer exists."""
    return PartialState(cpu=runs_on_cpu(cpu))


def global_batch(args: TrainingArguments) -> int:
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps



class LaunchReport(TrainerCallback):
    """Logs, once per run on the main process, how training runs: processes, backend, device, batch sizes, steps.

    Started by ``accelerate launch`` through its single-process launcher (``--cpu``, or no GPU without
    ``--multi_gpu``), a run has one process whatever ``--num_processes`` said; that is warned about.
    """

    def __init__(self, gather_across_devices: bool = False) -> None:
        self.in_batch = "gathered from every process" if gather_across_devices else "per device (not gathered)"

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        backend = getattr(args.distributed_state, "backend", None) or "none"
        logger.info(
            "training on %d process(es) (backend %s, device %s): %d queries per device, global batch %d, %d steps, "
            "%g epochs; in-batch negatives %s", args.world_size, backend, args.device, args.per_device_train_batch_size,
            global_batch(args), state.max_steps, args.num_train_epochs if args.max_steps <= 0 else state.num_train_epochs,
            self.in_batch if args.world_size > 1 else "of the batch",
        )
        if args.world_size == 1 and "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
            logger.warning(
                "accelerate launch started ONE process: its single-process launcher ignores --num_processes. "
                "For N processes on CPU (gloo) use 'accelerate launch --multi_gpu --num_processes N' (it runs CPU "
                "processes without a GPU) or 'torchrun --nproc_per_node N -m st_tasb train ... --cpu'"
            )


@contextmanager
def main_process_threads(state: PartialState) -> Iterator[None]:
    """Under a launcher, give the main process all CPU threads while it works alone (the others wait)."""
    if state.num_processes == 1 or not state.is_main_process:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
