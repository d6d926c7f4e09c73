"""Benchmark registry: a name (or a JSONL folder) -> a list of retrieval tasks."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..errors import InvalidInput, MissingPath
from .tasks import RetrievalTask

# name -> (module, loader function); loaders take (root, tasks=None)
LOADERS = {
    "mmeb-v2": ("lame.eval.mmeb", "load_mmeb_v2"),
    "mrmr": ("lame.eval.mrmr", "load_mrmr"),
    "jsonl": ("lame.eval.jsonl", "load_jsonl_benchmark"),
}


def load_benchmark(benchmark: str, data_root: str | Path | None = None,
                   tasks: list[str] | None = None) -> list[RetrievalTask]:
    """``benchmark`` is a registered name (its files under ``data_root``) or a JSONL benchmark folder."""
    if benchmark not in LOADERS:
        if not Path(benchmark).exists():
            raise MissingPath(f"benchmark {benchmark!r} is neither a known name ({', '.join(LOADERS)}) "
                              "nor an existing folder")
        benchmark, data_root = "jsonl", benchmark
    if data_root is None:
        raise InvalidInput(f"benchmark {benchmark}: give the folder that holds its files (--data-root)")
    module, function = LOADERS[benchmark]
    loader = getattr(import_module(module), function)
    if benchmark == "jsonl":
        loaded = loader(data_root)
        if tasks:
            unknown = sorted(set(tasks) - {t.name for t in loaded})
            if unknown:
                raise InvalidInput(f"unknown task(s) {unknown}; this benchmark has {[t.name for t in loaded]}")
            loaded = [t for t in loaded if t.name in tasks]
        return loaded
    return loader(data_root, tasks=tasks)
