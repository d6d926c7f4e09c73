"""Each process's slice of a step's global batch: drawn from the data mixture, featurised (in background
threads with ``train.featurize_workers``), and collected into a :class:`~lame.training.steps.TrainBatch`
with the unusable samples skipped and counted (:mod:`lame.training.skips`)."""

from __future__ import annotations

import json
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..data.items import ItemError
from .collectives import global_sum
from .data import DataError, TrainingExample
from .recipe import DataSpec, StageSpec
from .steps import TrainBatch


def label_id(label, fallback: int) -> int:
    """Labels of any JSON type -> comparable ints (equal on every process); no label -> a unique id."""
    if label is None:
        return -1 - fallback
    if isinstance(label, bool) or not isinstance(label, int):
        return zlib.crc32(json.dumps(label, sort_keys=True).encode()) & 0x7FFFFFFF
    return label


def featurize_example(model, example: TrainingExample, num_pos: int, num_neg: int) -> list:
    """A sample's query, positives and negatives in one batched featurizer call; its first bad
    item (in that order) makes the whole sample an ItemError, which skips it."""
    if len(example.positives) < num_pos:
        raise DataError(f"{example.where}: {len(example.positives)} positives, the recipe asks for {num_pos}")
    if len(example.negatives) < num_neg:
        raise DataError(f"{example.where}: {len(example.negatives)} hard negatives, the recipe asks for {num_neg}")
    items = [example.query, *example.positives[:num_pos], *example.negatives[:num_neg]]
    roles = ["query"] + ["positive"] * num_pos + ["negative"] * num_neg
    out = model.featurizer.many(items)
    for role, features in zip(roles, out):
        try:
            if isinstance(features, ItemError):
                raise features
            if role == "query":  # the model's hook: the explicit-CoT baseline adds the example's rationale
                out[0] = model.training_query_features(example, features)
        except ItemError as exc:
            raise ItemError(None, f"{example.where}: {role}: {exc.reason}") from exc
    return out


@dataclass
class PendingBatch:
    sampler_state: dict  # the sampler before this batch was drawn
    samples: list  # (source, line, example, draw index, Future of the features | the read error)


class _Inline:
    """The executor of ``featurize_workers: 0``: featurises when asked, in the calling thread."""

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001  (re-raised by result(), like a pool's future)
            future.set_exception(exc)
        return future


class BatchDrawer:
    def __init__(self, data: DataSpec, sampler, model, rank: int, world: int, skips, log_line):
        """``sampler``: the run's :class:`~lame.training.data.MixtureSampler`; ``skips``: its
        :class:`~lame.training.skips.SkipLog`; ``log_line(text)`` prints a note."""
        self.data, self.sampler, self.model = data, sampler, model
        self.rank, self.world = rank, world
        self.skips, self.log_line = skips, log_line
        self.pool = _Inline()
        self._noted_fields: dict[str, set[str]] = {}

    @contextmanager
    def featurizing(self, workers: int):
        """Featurises in ``workers`` threads while active (0: in the calling thread, when collected).
        Featurising (image decoding and resizing, tokenising) releases the GIL: threads overlap it with
        the training step. Processes would need the model's featurizer pickled to every worker."""
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="featurize") if workers else _Inline()
        try:
            yield
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = _Inline()

    def draw(self, stage: StageSpec) -> PendingBatch:
        """Draws this process's slice of the next global batch and starts featurising it. Records are
        read here, in order."""
        sampler_state = self.sampler.state_dict()  # what a checkpoint taken before this batch must hold
        draws_before = self.sampler.draws
        positions = self.sampler.next_positions(stage.batch_size * self.world)
        mine = positions[self.rank * stage.batch_size: (self.rank + 1) * stage.batch_size]
        samples = []
        for offset, (source, line) in enumerate(mine):
            label = draws_before + self.rank * stage.batch_size + offset
            try:
                example = self.sampler.read(source, line)
            except DataError as exc:
                samples.append((source, line, None, label, exc))
                continue
            work = (featurize_example, self.model, example, self.data.positives_per_query,
                    self.data.negatives_per_query)
            samples.append((source, line, example, label, self.pool.submit(*work)))
        return PendingBatch(sampler_state, samples)

    def collect(self, pending: PendingBatch, step: int) -> TrainBatch:
        """Waits for a drawn batch's features (for step ``step``); unusable samples are skipped and
        counted, in draw order. A batch with no usable sample on any process stops every process."""
        queries, positives, negatives, targets, labels = [], [], [], [], []
        skipped = []  # this process's reasons, in draw order
        per_query = self.data.positives_per_query
        for source, line, example, draw, work in pending.samples:
            try:
                if isinstance(work, Exception):
                    raise work
                features = work.result()
            except (ItemError, DataError) as exc:
                skipped.append(self.skips.record(source, line, exc))
                continue
            queries.append(features[0])
            positives += features[1: 1 + per_query]
            negatives += features[1 + per_query:]
            targets.append(example.decoder_target(self.model.config.decoder_target))
            labels.append(label_id(example.label, draw))
        self._note_extra_fields()
        # one collective for both: every process stops together (none hangs in a collective) and
        # every process knows the global number of skipped samples
        empty, new_skips = global_sum([0 if queries else 1, len(skipped)])
        if new_skips:
            self.skips.count(int(new_skips), skipped)
        if empty:
            error = DataError(f"every sample of a batch at step {step} was unusable: {self.skips.summary()}")
            error.every_process = True
            raise error
        return TrainBatch(queries, positives, negatives, targets, torch.tensor(labels))

    def _note_extra_fields(self) -> None:
        for source in self.sampler.sources:
            new = sorted(source.extra_fields - self._noted_fields.get(source.name, set()))
            if new:
                self.log_line(f"note: {source.path} has fields outside the record schema, kept as metadata "
                              f"and not used for training: {new}")
                self._noted_fields.setdefault(source.name, set()).update(new)
