"""Distributed training: 2 CPU processes (gloo, through torchrun) against 1 process.

Replicated data parallel: both ranks end with bit-identical weights, and 2 processes x batch B
follow the same trajectory as 1 process x batch 2B (same global draws in the same order,
global-batch loss), gradient by gradient. FSDP and DeepSpeed ZeRO-2/3: the saved model matches
the 1-process one, and a run killed after its first checkpoint and resumed ends where the
uninterrupted run ends.

Each launch does little work (2 steps of a batch of 2 per process; the resume check only where
it adds something) so that it finishes in time on a busy machine: every process also pays for
importing torch, transformers and accelerate.

Tolerances. Float32 sums taken in another order (two processes' partial sums all-reduced, GradCache
chunks, another BLAS kernel) give gradients that differ by rounding: measured at most 5e-6 of a
tensor's largest entry on AVX-512 and AVX2 kernels, so gradients are compared to GRADIENT_TOLERANCE
(tolerances.GRADIENT, ~7e-5, derived there) of the tensor's largest entry; a real fault (a missing or
doubled all-reduce, an item dropped from a batch of 4) moves a gradient by more than 10 % of that scale. Weights after AdamW steps are
only as well-conditioned as AdamW is: its update g / (sqrt(v) + eps) normalises each element by its own
gradient, so with torch's eps of 1e-8 an element whose gradient is near zero moves by up to the learning
rate on a rounding difference. The runs here use ADAM_EPS = 1e-2, above the gradients' rounding noise,
so that the update is Lipschitz in the gradients and weights can be bounded from them (adamw_tolerance).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import HANG_GUARD_S, WORDS, free_port, subprocess_env
from safetensors.torch import load_file
from tolerances import GRADIENT

from lame.modeling import LaMEModel

PER_RANK_BATCH = 2
STEPS = 2
LR = 1e-3
ADAM_EPS = 1e-2
GRADIENT_TOLERANCE = GRADIENT  # of the largest entry of the tensor (see the module's docstring)
TRAINABLE = [{"pattern": pattern, "lr": LR, "eps": ADAM_EPS} for pattern in
             ("latent_embeddings", "decoder_head.*", "backbone.model.language_model.layers.1.mlp.*")]
VARIANTS = {
    "full": {"trainable": TRAINABLE},  # the model's default weights: contrastive + reconstruction + diversity
    "no_reconstruction": {"trainable": TRAINABLE, "reconstruction_weight": 0.0},
    # per-step draws of k (the documents of step 2 read 2 of the 4 reason tokens) and Matryoshka sizes
    "elastic": {"trainable": TRAINABLE, "lame": {"elastic_k": [0, 2, 4], "matryoshka_dims": [64, 16]}},
}

SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from lame.training.recipe import recipe_from_dict
from lame.training.trainer import Trainer, build_model

data_dir, batch_size, out_root = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
variants = json.loads(sys.argv[4])
steps = int(sys.argv[5])
train_settings = json.loads(sys.argv[6])  # strategy, deepspeed_config, grad_cache_chunk
resume = sys.argv[7] == "resume"
strategy = train_settings.get("strategy", "ddp")


def full(tensor):  # FSDP holds shards (DTensor): gather the whole tensor (every rank calls this)
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def tensors(named):
    return {k: full(v).detach().clone().contiguous() for k, v in named}


for name, stage in variants.items():
    stage = dict(stage)
    raw = {
        "model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny",
                  "lame": {"num_reason_tokens": 4, "temperature": 0.05, **stage.pop("lame", {})}},
        "data": {"sources": [{"path": "train.jsonl"}]},
        "train": {"output_dir": str(out_root / name), "save_every": 1, "log_every": 1, "eval_every": 1,
                  "tensorboard": False, **train_settings},
        "stages": [{"name": "only", "steps": steps, "batch_size": batch_size, **stage}],
    }
    recipe = recipe_from_dict(raw, data_dir)
    # Sharded weights: evaluating between steps runs on every process and must not disturb training.
    evaluator = None if strategy == "ddp" else (lambda m: {"x": float(m.encode(["one plus two"])[0, 0])})
    trainer = Trainer(recipe, show_progress=False, evaluator=evaluator)
    rank = trainer.rank
    if rank == 0:
        initial = build_model(recipe).state_dict().items()
        save_file(tensors(initial), str(out_root / f"{name}-init.safetensors"))
    grads = []  # the gradients the optimizer applies (after the all-reduce), per step
    original_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads.append(tensors((n, p.grad) for n, p in trainer.model.named_parameters(remove_duplicate=False)
                             if p.grad is not None))  # tied weights under each name
        return original_step(self, *args, **kwargs)

    torch.optim.AdamW.step = step
    try:
        trainer.run()
    finally:
        torch.optim.AdamW.step = original_step
    save_file(tensors(trainer.model.state_dict().items()), str(out_root / f"{name}-rank{rank}.safetensors"))
    save_file({f"{i}/{n}": g for i, gs in enumerate(grads) for n, g in gs.items()},
              str(out_root / f"{name}-grads{rank}.safetensors"))
    (out_root / f"{name}-world{rank}.txt").write_text(str(trainer.world))
    if resume:  # killed after the checkpoint of step 1, then resumed
        raw["train"]["output_dir"] = str(out_root / f"{name}-resumed")
        recipe = recipe_from_dict(raw, data_dir)
        assert Trainer(recipe, show_progress=False).run(stop_after=1) is None
        Trainer(recipe, resume=True, show_progress=False).run()
'''


DIVERGE_SCRIPT = r'''
import json, sys
from pathlib import Path
from lame.training.recipe import recipe_from_dict
from lame.training.trainer import Trainer, TrainingDiverged

data_dir, out_root, configs = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
for name, settings in configs.items():  # one launch, one strategy after the other
    raw = {
        "model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "lame": {"num_reason_tokens": 2, "temperature": 0.05}},
        "data": {"sources": [{"path": "train.jsonl"}]},
        "train": {"output_dir": str(out_root / name), "save_every": 1, "keep_last": 20, "log_every": 1,
                  "tensorboard": False, "featurize_workers": 0, **settings},
        "stages": [{"name": "only", "steps": 12, "batch_size": 2, "schedule": "constant", "trainable": [
            {"pattern": p, "lr": 1e6, "weight_decay": 0.01} for p in ("latent_embeddings", "decoder_head.*")]}],
    }
    trainer = Trainer(recipe_from_dict(raw, data_dir), show_progress=False)
    try:
        trainer.run()
        message = "finished"
    except TrainingDiverged as exc:
        message = str(exc)
    (out_root / f"{name}-rank{trainer.rank}.txt").write_text(message)
'''


def gradient_bounds(grads: dict[str, torch.Tensor], key: str) -> list[float]:
    """Per step, how far another summation order may move parameter ``key``'s gradient (absolute)."""
    return [GRADIENT_TOLERANCE * float(grads[f"{step}/{key}"].abs().max()) if f"{step}/{key}" in grads else 0.0
            for step in range(STEPS)]


def adamw_tolerance(grads: dict[str, torch.Tensor], key: str, weight: torch.Tensor) -> float:
    """How far two runs' weights ``key`` may be apart after STEPS AdamW steps whose gradients agree within
    gradient_bounds (``grads``: the reference run's, per step).

    An AdamW step moves an element by lr * m / (sqrt(v) + eps), m and v bias-corrected running moments of
    its gradients g_1..g_t. Each moment weighs g_s by at most 1, so |d update_t / d g_s| <= 2 lr / eps
    (one term through m, one through v), and STEPS steps move the weight by at most
    2 lr / eps * sum_t sum_{s<=t} |delta g_s|. Each float32 update also rounds the weight (2^-24 relative)."""
    bounds = gradient_bounds(grads, key)
    through_gradients = 2 * LR / ADAM_EPS * sum(sum(bounds[: t + 1]) for t in range(STEPS))
    return through_gradients + STEPS * 2.0**-24 * float(weight.abs().max())


def run(command: list[str], timeout: int) -> None:
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command[:6])} ... exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-6000:]}")


def write_data(folder):
    with (folder / "train.jsonl").open("w") as f:
        for i in range(24):
            a, b = i % 10, (i * 7 + 3) % 10
            answer = WORDS[(a + b) % 10]
            # decoder targets of uneven lengths: the ranks hold different numbers of target tokens
            target = f"{WORDS[a]} and {WORDS[b]} make {answer} so {answer}" if i % 3 == 0 else answer
            query = {"text": f"{WORDS[a]} plus {WORDS[b]}", "instruction": "add mod ten"}
            if i % 5 == 2:  # an unusable sample: skipped on whichever process draws it
                query["image"] = "missing.png"
            record = {"id": str(i), "query": query, "positive": answer, "label": (a + b) % 10}
            if i % 4 != 3:  # some queries have no decoder target, so processes differ in decoder work
                record["answer"] = target
            f.write(json.dumps(record) + "\n")
    (folder / "train_script.py").write_text(SCRIPT)
    (folder / "diverge_script.py").write_text(DIVERGE_SCRIPT)


def train_two_processes(folder, output, variants: dict, train_settings: dict, resume: bool = False) -> None:
    output.mkdir()
    run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(folder / "train_script.py"),
         str(folder), str(PER_RANK_BATCH), str(output), json.dumps(variants), str(STEPS),
         json.dumps(train_settings), "resume" if resume else "-"], timeout=HANG_GUARD_S)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    write_data(folder)
    two, one = folder / "two", folder / "one"
    train_two_processes(folder, two, VARIANTS, {"strategy": "ddp"})
    one.mkdir()
    run([sys.executable, str(folder / "train_script.py"), str(folder), str(2 * PER_RANK_BATCH), str(one),
         json.dumps(VARIANTS), str(STEPS), json.dumps({"strategy": "ddp"}), "-"], timeout=HANG_GUARD_S)
    return {"two": two, "one": one, "folder": folder}


def test_two_ranks_end_with_identical_weights(runs):
    two = runs["two"]
    for name in VARIANTS:
        assert [(two / f"{name}-world{r}.txt").read_text() for r in (0, 1)] == ["2", "2"]
        rank0 = load_file(two / f"{name}-rank0.safetensors")
        rank1 = load_file(two / f"{name}-rank1.safetensors")
        initial = load_file(two / f"{name}-init.safetensors")
        assert rank0.keys() == rank1.keys() == initial.keys()
        different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
        assert different == [], f"{name}: ranks disagree on {different[:5]}"
        changed = {k for k in rank0 if not torch.equal(rank0[k], initial[k])}
        assert "latent_embeddings" in changed
        assert any(k.startswith("backbone.model.language_model.layers.1.mlp.") for k in changed)
        if name == "full":
            assert any(k.startswith("decoder_head.decoder.") for k in changed)
        trained = ("latent_embeddings", "decoder_head.", "backbone.model.language_model.layers.1.mlp.")
        frozen_changed = [k for k in changed if not k.startswith(trained)]
        assert frozen_changed == []


def test_one_final_model_and_per_rank_checkpoint_state(runs):
    out = runs["two"] / "full"
    models = sorted(p.name for p in out.iterdir() if (p / "lame_config.json").is_file())
    assert models == ["model"]
    heads = load_file(out / "model" / "lame_heads.safetensors")
    rank0 = load_file(runs["two"] / "full-rank0.safetensors")
    assert torch.equal(heads["latent_embeddings"], rank0["latent_embeddings"])
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step-000001", "step-000002"]
    for name in checkpoints:
        files = {p.name for p in (out / "checkpoints" / name).iterdir()}
        assert {"rng-0.json", "rng-1.json", "rng-0.safetensors", "rng-1.safetensors"} <= files
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # logged once, by the main process
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.parametrize("name", ["full", "no_reconstruction", "elastic"])
def test_two_processes_match_one_process_with_the_global_batch(runs, name):
    two_grads = load_file(runs["two"] / f"{name}-grads0.safetensors")
    one_grads = load_file(runs["one"] / f"{name}-grads0.safetensors")
    for step in range(STEPS):
        keys = {k for k in (*two_grads, *one_grads) if k.startswith(f"{step}/")}
        assert f"{step}/latent_embeddings" in keys
        for key in sorted(keys):
            a, b = two_grads.get(key), one_grads.get(key)
            a = torch.zeros_like(b) if a is None else a  # no gradient: zeros after the all-reduce
            b = torch.zeros_like(a) if b is None else b
            bound = GRADIENT_TOLERANCE * float(b.abs().max())
            torch.testing.assert_close(a, b, atol=bound, rtol=0, msg=lambda m: f"gradient {key}: {m}")
    two = load_file(runs["two"] / f"{name}-rank0.safetensors")
    one = load_file(runs["one"] / f"{name}-rank0.safetensors")
    initial = load_file(runs["two"] / f"{name}-init.safetensors")
    assert_trained_alike(two, one, initial, one_grads)


def assert_trained_alike(got: dict, want: dict, initial: dict, want_grads: dict) -> None:
    """``got`` is the run ``want`` (started from ``initial``, gradients ``want_grads``) up to adamw_tolerance,
    and that bound is far below how far training moved each trained tensor (else the check is empty)."""
    assert got.keys() == want.keys()
    for key in want:
        tolerance = adamw_tolerance(want_grads, key, want[key])
        torch.testing.assert_close(got[key], want[key], atol=tolerance, rtol=0, msg=lambda m: f"weight {key}: {m}")
        if f"0/{key}" in want_grads:
            moved = float((want[key] - initial[key]).abs().max())
            assert moved > 10 * tolerance, f"{key}: moved {moved:.2e}, tolerance {tolerance:.2e}"


DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


@pytest.mark.parametrize("strategy, grad_cache_chunk", [
    ("fsdp", None), ("zero2", None), ("zero3", None), ("fsdp", 1),
    pytest.param("zero2", 1, marks=pytest.mark.slow)])  # GradCache under sharding: fsdp-1 in the default suite
def test_sharded_training_matches_one_process_and_resumes(runs, strategy, grad_cache_chunk):
    """FSDP2 / DeepSpeed ZeRO-2 / ZeRO-3 on 2 processes, with and without GradCache: the saved model
    is the 1-process full-batch model (global-batch loss, sharded optimizer), and kill + resume
    reaches the same weights (checked without GradCache: resuming does not depend on it)."""
    settings = {"strategy": strategy, "grad_cache_chunk": grad_cache_chunk}
    if strategy.startswith("zero"):
        pytest.importorskip("deepspeed")
        settings = {"strategy": "deepspeed", "deepspeed_config": str(DEEPSPEED_CONFIGS / f"{strategy}.json"),
                    "grad_cache_chunk": grad_cache_chunk}
    output = runs["folder"] / f"{strategy}-chunk{grad_cache_chunk}"
    resume = grad_cache_chunk is None
    train_two_processes(runs["folder"], output, {"full": VARIANTS["full"]}, settings, resume)
    one = load_file(runs["one"] / "full-rank0.safetensors")
    initial = load_file(runs["two"] / "full-init.safetensors")
    saved = LaMEModel.from_pretrained(output / "full" / "model").state_dict()
    resumed = LaMEModel.from_pretrained(output / "full-resumed" / "model").state_dict() if resume else saved
    skipped = [line for path in (output / "full").glob("skipped-*.jsonl") for line in path.read_text().splitlines()]
    assert skipped, "the data has unusable samples: some must have been drawn and skipped"
    evaluations = [json.loads(line) for line in (output / "full" / "metrics.jsonl").read_text().splitlines()
                   if "eval/x" in line]
    assert [e["step"] for e in evaluations] == list(range(1, STEPS + 1))
    # sharded gradients (and GradCache's chunks) are the global gradient up to float summation order
    assert_trained_alike(saved, one, initial, load_file(runs["one"] / "full-grads0.safetensors"))
    for key in one:  # the same processes redo the same steps from the checkpoint: the same arithmetic
        torch.testing.assert_close(resumed[key], saved[key], atol=0, rtol=0,
                                   msg=lambda m: f"resumed weight {key}: {m}")


def test_divergence_stops_every_process_together_under_every_strategy(runs):
    """lr 1e6 on 2 processes under ddp, FSDP and ZeRO-2/3: every process stops at the same step with the
    same one-line message, and no checkpoint with non-finite weights is written or named."""
    configs = {"ddp": {"strategy": "ddp"}, "fsdp": {"strategy": "fsdp"}}
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pass
    else:
        configs.update({f"zero{stage}": {"strategy": "deepspeed",
                                         "deepspeed_config": str(DEEPSPEED_CONFIGS / f"zero{stage}.json")}
                        for stage in (2, 3)})
    output = runs["folder"] / "diverged"
    output.mkdir()
    run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(runs["folder"] / "diverge_script.py"),
         str(runs["folder"]), str(output), json.dumps(configs)], timeout=HANG_GUARD_S)
    for name in configs:
        messages = [(output / f"{name}-rank{rank}.txt").read_text() for rank in (0, 1)]
        assert messages[0] == messages[1] and messages[0].startswith("training diverged at step "), (name, messages)
        step = int(messages[0].split("at step ")[1].split()[0])
        checkpoints = sorted((output / name / "checkpoints").glob("step-*"))
        assert [c.name for c in checkpoints] == [f"step-{s:06d}" for s in range(1, step)], name
        for checkpoint in checkpoints:
            weights = LaMEModel.from_pretrained(checkpoint / "model").state_dict()
            assert all(torch.isfinite(v).all() for v in weights.values()), checkpoint
        if checkpoints:
            assert f"Last good checkpoint: {checkpoints[-1]}." in messages[0]
        assert not (output / name / "model").exists()
