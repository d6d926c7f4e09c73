"""Training checkpoints: written atomically (temporary folder, then rename), the last M kept.

A checkpoint folder ``step-000120/`` holds ``model/`` (a normal saved LaME model), the optimizer
state as safetensors + JSON, ``trainer_state.json`` (stage, step, data position, scheduler) and the
RNG states of each process. No pickle, except DeepSpeed's own files (``deepspeed/``) under ZeRO.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit())


def latest_checkpoint(root: Path) -> Path | None:
    found = checkpoint_dirs(root)
    return found[-1] if found else None


def save_optimizer_state(state: dict, directory: Path) -> None:
    """An optimizer ``state_dict`` (keyed by index, or by parameter name under FSDP) as safetensors + JSON."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, directory / "optimizer.safetensors")
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    (directory / "optimizer.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))


def load_optimizer_state(directory: Path) -> dict:
    """The state dict written by :func:`save_optimizer_state`."""
    meta = json.loads((directory / "optimizer.json").read_text())
    state: dict = {}
    entries = [*load_file(directory / "optimizer.safetensors").items(), *meta["scalars"].items()]
    for name, value in entries:
        owner, key = name.rsplit(".", 1)  # "3.exp_avg" or "backbone.model....weight.exp_avg"
        state.setdefault(int(owner) if owner.isdigit() else owner, {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_rng(directory: Path, rank: int) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    save_file(tensors, directory / f"rng-{rank}.safetensors")
    py_state = random.getstate()
    np_state = np.random.get_state()
    (directory / f"rng-{rank}.json").write_text(json.dumps({
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }))


def load_rng(directory: Path, rank: int) -> None:
    tensors = load_file(directory / f"rng-{rank}.safetensors")
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in sorted(tensors) if k.startswith("cuda")])
    meta = json.loads((directory / f"rng-{rank}.json").read_text())
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def commit(tmp: Path, final: Path, keep_last: int) -> None:
    """Renames a finished temporary checkpoint into place and prunes old ones."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(final.parent)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
