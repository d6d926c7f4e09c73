"""Benchmark registry: a name (or a JSONL folder) -> a list of retrieval tasks."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, MissingPath
from .tasks import RetrievalTask

# name -> (module, loader function, data checker or None); loaders take (root, tasks=None, **options)
LOADERS = {
    "mmeb-v2": ("lame.eval.mmeb", "load_mmeb_v2", "check_mmeb_v2"),
    "mrmr": ("lame.eval.mrmr", "load_mrmr", "check_mrmr"),
    "jsonl": ("lame.eval.jsonl", "load_jsonl_benchmark", None),
}
# the keyword options each named benchmark's loader takes (docs/benchmarks.md)
OPTIONS = {
    "mmeb-v2": ("num_frames", "num_clip_frames", "num_samples", "pad_frames", "eval_type", "candidate_instruction",
                "moment_positives", "label_pool", "extract_dir"),
    "mrmr": ("items", "extract_dir"),
    "jsonl": (),
}


def load_benchmark(benchmark: str, data_root: str | Path | None = None, tasks: list[str] | None = None,
                   **options: Any) -> list[RetrievalTask]:
    """``benchmark`` is a registered name (its files under ``data_root``) or a JSONL benchmark folder.

    ``options`` go to the benchmark's loader (:data:`OPTIONS` lists them); options left at None are not
    passed, and an option the benchmark does not take is an error naming it.
    """
    if benchmark not in LOADERS:
        if not Path(benchmark).exists():
            raise MissingPath(f"benchmark {benchmark!r} is neither a known name ({', '.join(LOADERS)}) "
                              "nor an existing folder")
        benchmark, data_root = "jsonl", benchmark
    if data_root is None:
        raise InvalidInput(f"benchmark {benchmark}: give the folder that holds its files (--data-root)")
    options = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(options) - set(OPTIONS[benchmark]))
    if foreign:
        takers = {o: [b for b, names in OPTIONS.items() if o in names] for o in foreign}
        raise InvalidInput(f"option(s) {foreign} do not apply to benchmark {benchmark} (they apply to {takers})")
    module, function, _ = LOADERS[benchmark]
    loader = getattr(import_module(module), function)
    if benchmark == "jsonl":
        loaded = loader(data_root)
        if tasks:
            unknown = sorted(set(tasks) - {t.name for t in loaded})
            if unknown:
                raise InvalidInput(f"unknown task(s) {unknown}; this benchmark has {[t.name for t in loaded]}")
            loaded = [t for t in loaded if t.name in tasks]
        return loaded
    return loader(data_root, tasks=tasks, **options)


def check_benchmark_data(benchmark: str, data_root: str | Path, tasks: list[str] | None = None) -> tuple[list, str]:
    """What a named benchmark needs under ``data_root``: (parts, printable report). Reads no data file."""
    if benchmark not in LOADERS or LOADERS[benchmark][2] is None:
        named = [b for b, spec in LOADERS.items() if spec[2]]
        raise InvalidInput(f"--check-data applies to the published benchmarks {named}, not {benchmark!r}")
    from .mmeb.layout import format_check

    module, _, checker = LOADERS[benchmark]
    parts = getattr(import_module(module), checker)(Path(data_root), tasks=tasks)
    return parts, format_check(parts, Path(data_root), {"mmeb-v2": "MMEB-V2", "mrmr": "MRMR"}[benchmark])
