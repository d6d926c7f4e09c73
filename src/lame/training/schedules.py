"""Learning-rate schedules a recipe can name: the transformers schedulers that need nothing but the
warm-up and the number of steps (no validation metric, no extra options)."""

from __future__ import annotations

from functools import cache


def make_scheduler(name: str, optimizer, warmup_steps: int, steps: int):
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=steps)


@cache
def schedules() -> tuple[str, ...]:
    """The names of ``transformers.SchedulerType`` that :func:`make_scheduler` can build and step."""
    import torch
    from transformers import SchedulerType

    def works(name: str) -> bool:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        try:
            scheduler = make_scheduler(name, optimizer, 1, 2)
            optimizer.step()
            scheduler.step()
        except (TypeError, ValueError):  # needs a metric (reduce_lr_on_plateau) or more options
            return False
        return True

    return tuple(s.value for s in SchedulerType if works(s.value))
