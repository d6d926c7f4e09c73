"""``lame encode``: a JSONL corpus -> float32 embedding shards, resumable and data-parallel.

Under ``accelerate launch`` or torchrun each process encodes its own share of the unfinished shards;
after a barrier the main process checks that every shard is there, writes the skipped-items report
and the manifest. A killed run keeps its finished shards: run the same command again to resume.

Duplicate ids: the first record with an id is kept; later records with the same id are skipped and
reported (``"duplicate id ..."``), so the output's ids are unique.

A corpus of which no record could be embedded is an error (:class:`NothingEmbedded`, raised on every
process alike), not an empty output: the report lists every refused record, no manifest is written.
Whether anything was embedded is counted over the whole output, so a resumed run whose shards were
all done earlier is a success.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InvalidInput
from .corpus import ShardSpan, duplicate_ids, plan_shards, read_span
from .shards import MANIFEST, REPORT, SETTINGS, ShardFiles, atomic_write, atomic_write_json

FORMAT_VERSION = 1
FIRST_REASONS = 3  # distinct reasons quoted in a NothingEmbedded message


class NothingEmbedded(InvalidInput):
    """No record of the corpus could be embedded; the message names the first few reasons."""

    every_process = True  # every process of a data-parallel run raises it alike; printed once


def encode_corpus(
    model,
    input_path: str | Path,
    output: str | Path,
    batch_size: int = 32,
    shard_size: int = 10_000,
    show_progress: bool = True,
    max_shards: int | None = None,
    num_reason_tokens: int | None = None,
    dimensions: int | None = None,
) -> dict | None:
    """Embeds every record of ``input_path`` into shards under ``output``; returns the manifest.

    ``model`` is a :class:`~lame.LaMEModel` or a saved model folder (loaded on this process's
    device). ``max_shards`` stops each process after that many new shards (for time-boxed jobs);
    the result is then ``None`` and a later call resumes. ``num_reason_tokens`` and ``dimensions``
    (values the model was trained for; default K and the full size) are recorded in the manifest, and
    a resumed run must use the same.
    """
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    input_path, output = Path(input_path).resolve(), Path(output)
    model_path = None
    if isinstance(model, (str, Path)):
        from ..modeling import LaMEModel

        model_path = str(Path(model).resolve())
        model = LaMEModel.from_pretrained(model, device=state.device)

    choice = {"num_reason_tokens": model.check_reason_tokens(num_reason_tokens),
              "dimensions": model.check_dimensions(dimensions)}
    spans = plan_shards(input_path, shard_size)
    settings = {"input": str(input_path), "input_bytes": input_path.stat().st_size,
                "records": sum(s.count for s in spans), "shard_size": shard_size,
                "model_fingerprint": model.fingerprint(), **choice}
    output.mkdir(parents=True, exist_ok=True)
    _check_settings(output, settings)
    pending = [s for s in spans if not ShardFiles(output, s.number).is_complete()]
    state.wait_for_everyone()  # every process has listed the same unfinished shards before any writes
    if state.is_main_process and not (output / SETTINGS).is_file():
        atomic_write_json(output / SETTINGS, settings)
    mine = pending[state.process_index::state.num_processes][:max_shards]
    duplicates = duplicate_ids(input_path) if mine else {}

    with tqdm(total=sum(s.count for s in mine), unit="item", desc=f"encode {input_path.name}",
              disable=not (show_progress and state.is_main_process)) as bar:
        for span in mine:
            _encode_shard(model, input_path, output, span, shard_size, batch_size, duplicates, choice)
            bar.update(span.count)
    state.wait_for_everyone()
    error = None
    if state.is_main_process and all(ShardFiles(output, s.number).is_complete() for s in spans):
        try:
            _finish(output, spans, settings, model_path, choice["dimensions"], bool(model.config.normalize))
        except InvalidInput as exc:  # shared below, so that no process waits for one that raised
            error = (type(exc), str(exc))
    error = _from_main_process(state, error)
    if error is not None:
        raised = error[0](error[1])
        raised.every_process = True  # printed once, by the main process
        raise raised
    manifest = output / MANIFEST
    return json.loads(manifest.read_text()) if manifest.is_file() else None


def _from_main_process(state, value):
    """``value`` as the main process has it, on every process (a barrier too)."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _check_settings(output: Path, settings: dict) -> None:
    path = output / SETTINGS
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    changed = [f"{k}: {previous.get(k)!r} then, {v!r} now" for k, v in settings.items()
               if k != "input" and k in previous and previous[k] != v]  # the same file may have moved
    if changed:
        raise InvalidInput(f"{output} holds shards of another run ({'; '.join(changed)}); use a new output folder")


def _encode_shard(model, input_path: Path, output: Path, span: ShardSpan, shard_size: int, batch_size: int,
                  duplicates: dict | None = None, choice: dict | None = None) -> None:
    records = list(read_span(input_path, span, span.number * shard_size))
    for record in records:
        if record.error is None and record.line in (duplicates or {}):
            record.error = (f"duplicate id {record.id!r}: line {duplicates[record.line][1]} has it already "
                            "(the first record with an id is kept)")
    good = [r for r in records if r.error is None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped items go to the report instead
        embeddings, skipped = model.encode([r.item for r in good], batch_size=batch_size, on_error="skip",
                                           return_skipped=True, show_progress_bar=False, role="document",
                                           **(choice or {}))
    reasons = {s.index: s.reason for s in skipped}
    keep = [i for i in range(len(good)) if i not in reasons]
    report = [{"id": r.id, "line": r.line, "reason": r.error} for r in records if r.error is not None]
    report += [{"id": good[i].id, "line": good[i].line, "reason": reason} for i, reason in reasons.items()]
    report.sort(key=lambda row: row["line"])
    ShardFiles(output, span.number).write(embeddings[keep], [good[i].id for i in keep], report)


def _finish(output: Path, spans: list[ShardSpan], settings: dict, model_path: str | None, dim: int,
            normalized: bool) -> None:
    shards, skipped = [], []
    for span in spans:
        files = ShardFiles(output, span.number)
        ids = json.loads(files.ids.read_text())
        shape = np.load(files.embeddings, mmap_mode="r").shape
        if shape != (len(ids), dim):
            raise InvalidInput(f"{files.embeddings}: shape {shape} does not match {len(ids)} ids of dimension {dim}")
        skipped += json.loads(files.skipped.read_text())
        shards.append({"number": span.number, "embeddings": files.embeddings.name, "ids": files.ids.name,
                       "count": len(ids)})
    atomic_write(output / REPORT, lambda f: f.writelines(json.dumps(row) + "\n" for row in skipped), mode="w")
    if not any(s["count"] for s in shards):
        (output / MANIFEST).unlink(missing_ok=True)  # an earlier run's: the folder holds nothing usable
        raise NothingEmbedded(_nothing_embedded(Path(settings["input"]), skipped, output / REPORT))
    manifest = {"format": FORMAT_VERSION, "dtype": "float32", "normalized": normalized, "dim": dim,
                "count": sum(s["count"] for s in shards), "skipped": len(skipped),
                "duplicates": sum(row["reason"].startswith("duplicate id") for row in skipped), "model": model_path,
                **settings, "report": REPORT, "shards": shards}
    atomic_write_json(output / MANIFEST, manifest)


def _nothing_embedded(input_path: Path, refused: list[dict], report: Path) -> str:
    if not refused:
        return f"{input_path} holds no record (every line is blank)"
    first: dict[str, list[int]] = {}  # distinct reasons, in file order: the lines that have it
    for row in refused:
        first.setdefault(" ".join(str(row["reason"]).split()), []).append(row["line"])
    quoted = [f"line {lines[0]}: {reason}" + (f" (and {len(lines) - 1} more lines)" if lines[1:] else "")
              for reason, lines in list(first.items())[:FIRST_REASONS]]
    reasons = "; ".join(quoted)
    return (f"no record of {input_path.name} could be embedded ({len(refused)} refused); "
            f"first reasons: {reasons} (every one in {report})")


def describe_manifest(manifest: dict | None, output: str | Path) -> str:
    """The line `lame encode` ends with: what was embedded, or how to resume an early stop."""
    if manifest is None:
        return f"stopped early (--max-shards): run the same command again to resume {output}"
    duplicates = f", {manifest['duplicates']} of them duplicate ids" if manifest.get("duplicates") else ""
    return (f"{manifest['count']} embeddings in {len(manifest['shards'])} shards under {output}; "
            f"{manifest['skipped']} skipped{duplicates} (listed in {Path(output) / manifest['report']})")

