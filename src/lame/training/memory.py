"""A memory planner for training recipes: the peak memory of one process, per stage, before anything runs.

``lame train RECIPE --dry-run`` prints it: parameters, gradients and optimizer states (by strategy:
ddp replicated, FSDP sharded, DeepSpeed ZeRO-2 / ZeRO-3; by precision; LoRA), activations of the
batch at a given sequence length (with and without gradient checkpointing, whole batch or GradCache
chunks), the transient buffers of the largest operations, and the largest GradCache chunk that fits
a given ``--gpu-memory``.

How the estimate is made (every count is the recipe's real architecture, built on the meta device):

* **weights**: every parameter in the dtype the trainer holds it in during the stage, read from the
  model (:func:`lame.training.params.master_weights`: float32 master weights for what trains, the
  recipe's ``model.dtype`` for the rest; the caller casts the model as the trainer does, see
  ``dry_run``). DeepSpeed with bf16/fp16 recasts the whole module to 16 bits and keeps fp32 master
  weights in its optimizer. FSDP and ZeRO-3 keep ``1/world`` of the weights, plus the gathered
  weights of the blocks being computed (two, with prefetch).
* **gradients**: the stage's trainable parameters, in their dtype (float32: they are master
  weights); ``1/world`` under FSDP and ZeRO-2/3.
* **optimizer**: AdamW's two moments in the parameter's dtype (DeepSpeed: fp32 moments; its ZeRO-1/2
  optimizer also updates an fp32 copy of its partition, and with bf16/fp16 keeps fp32 gradient
  partitions), ``1/world`` under FSDP and ZeRO; plus the step's temporaries (one gradient-sized
  buffer per moment, as ``torch._foreach`` allocates them).
* **activations**: what autograd keeps for the backward: per position and block, a sum of the block's
  widths with coefficients counted on the upstream blocks (:data:`BLOCK_COEFFICIENTS`, checked against
  measured peaks, see ``docs/speed.md``), in the compute dtype (bf16/fp16 autocast: 2 bytes, but RMS
  norms keep fp32 copies; without autocast each tower computes in its weights' dtype); with gradient
  checkpointing only each block's input, plus one block recomputed. The vision tower keeps activations
  only when it trains; otherwise its largest block's working set is transient. The decoder head adds its own blocks over the target tokens and the
  logits of its vocabulary (fp32 for the loss).
* **when**: without GradCache the three forward passes (queries, positives, negatives) are alive
  together at the backward; with GradCache one chunk's graph is, while the gradients accumulate.

The estimate is checked against peaks measured on tiny configurations by ``lame bench memory``
(:mod:`lame_testbed.bench.peak`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .recipe import PlanSettings  # noqa: F401  (re-exported: where the planner's callers look)

GIB = 1024**3

# Elements autograd saves per position in one block, as multiples of its widths (hidden H, query width q,
# key/value width kv, MLP width I), counted with saved-tensor hooks on the upstream Qwen2 / Qwen3 decoder
# layers and vision blocks. "base": a gradient flows through the block but its weights are frozen (only
# what the input's gradient needs); "weights": added when the block's weights train (full or LoRA): the
# inputs of its matrix products. "hidden" tensors are the residual stream and the norms, which stay in
# fp32 when the weights are fp32 (autocast computes the products in bf16), or are upcast to fp32 by the
# RMS norm ("fp32_hidden") when the weights are bf16.
BLOCK_COEFFICIENTS = {
    "language": {"base": {"hidden": 4.0, "query": 2.0, "kv": 3.0, "mlp": 3.0},
                 "weights": {"hidden": 3.0, "query": 1.0, "kv": 0.0, "mlp": 1.0}, "fp32_hidden": 2.0},
    "vision": {"base": {"hidden": 10.0, "query": 0.0, "kv": 0.0, "mlp": 3.0},
               "weights": {"hidden": 2.0, "query": 0.0, "kv": 0.0, "mlp": 1.0}, "fp32_hidden": 4.0},
}


@dataclass
class Widths:
    """The sizes the estimate needs, of one tower."""

    blocks: int
    hidden: int
    query: int = 0
    kv: int = 0
    mlp: int = 0
    block_params: int = 0
    weight_bytes: int = 4  # bytes per element of the blocks' weights as held (their largest tensor's dtype)

    def compute_bytes(self, setup: "Setup") -> int:
        """Bytes per element the blocks compute in: autocast's 16 bits, else their weights' dtype."""
        return 2 if setup.autocast else self.weight_bytes

    def saved_per_position(self, kind: str, setup: "Setup", weights_train: bool = False,
                           dropout_inputs: float = 0.0) -> float:
        """Bytes autograd keeps per position for one block (see :data:`BLOCK_COEFFICIENTS`);
        ``dropout_inputs``: elements per position that LoRA's dropout keeps (its inputs' widths)."""
        c = BLOCK_COEFFICIENTS[kind]
        widths = {"hidden": self.hidden, "query": self.query or self.hidden, "kv": self.kv, "mlp": self.mlp}
        parts = [c["base"]] + ([c["weights"]] if weights_train else [])
        hidden = sum(p["hidden"] for p in parts) * self.hidden
        other = sum(p[k] * widths[k] for p in parts for k in ("query", "kv", "mlp"))
        compute = self.compute_bytes(setup)
        if self.weight_bytes >= 4:  # fp32 weights: the residual stream and norms stay fp32
            hidden_bytes = hidden * 4
        else:  # bf16 weights: the RMS norms' fp32 copies, the rest bf16
            hidden_bytes = c["fp32_hidden"] * self.hidden * 4 + max(0.0, hidden - c["fp32_hidden"] * self.hidden) * compute
        # LoRA's dropout: the input of lora_A in the compute dtype, and the dropout's mask, counted at 4 bytes
        # (on the CPU it is a float tensor of peft's float32 cast of the input; CUDA's fused dropout keeps 1 byte)
        return hidden_bytes + other * compute + dropout_inputs * (compute + 4)

    def cast_copies(self, setup: "Setup") -> float:
        """Bytes of the blocks' weights cast to the autocast dtype and kept for the backward of one pass
        (only when the weights are stored in a wider dtype than the one computed in)."""
        if self.compute_bytes(setup) >= self.weight_bytes:
            return 0.0
        return self.blocks * self.block_params * self.compute_bytes(setup)

    def transient_per_position(self, compute_bytes: int) -> float:
        """The working set of one block's forward, beyond what it saves (the MLP's widest tensors)."""
        return (3 * self.mlp + 4 * self.hidden) * compute_bytes


@dataclass
class Architecture:
    """A model's tower widths and what its parameters take as held (dtypes and ``requires_grad`` as set for
    one stage)."""

    language: Widths
    vision: Widths | None
    decoder: Widths | None
    vocab: int
    decoder_vocab: int
    decoder_hidden: int
    total_params: int
    largest_block_params: int
    weight_bytes: int = 0  # every parameter, each in its own dtype
    trainable_bytes: int = 0  # the parameters that train (their gradient and each AdamW moment take as much)
    largest_block_bytes: int = 0


def held_bytes(parameters) -> int:
    """Bytes of ``parameters`` in the dtypes they are held in (works on the meta device)."""
    return sum(p.numel() * p.element_size() for p in parameters)


def weight_element_bytes(module) -> int:
    """Bytes per element of a block's weights: the dtype of its largest tensor (a LoRA block's base weights)."""
    largest = max(module.parameters(), key=lambda p: p.numel(), default=None)
    return largest.element_size() if largest is not None else 4


def architecture_of(model) -> Architecture:
    """The widths of a LaME model's towers and the bytes of its parameters as they are held now (works on
    the meta device)."""
    backbone = model.backbone
    text = backbone.config.get_text_config()
    lm = model.adapter.language_model(backbone)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    blocks = list(getattr(lm, "layers", []))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    language = Widths(blocks=len(blocks), hidden=text.hidden_size, query=text.num_attention_heads * head_dim,
                      kv=text.num_key_value_heads * head_dim, mlp=text.intermediate_size,
                      block_params=count(blocks[0]) if blocks else 0,
                      weight_bytes=weight_element_bytes(blocks[0]) if blocks else 4)
    vision = None
    visual = getattr(getattr(backbone, "model", backbone), "visual", None)
    if visual is not None and hasattr(visual, "blocks"):
        vc = backbone.config.vision_config
        hidden = getattr(vc, "embed_dim", None) or vc.hidden_size
        mlp = getattr(vc, "intermediate_size", None) or int(hidden * getattr(vc, "mlp_ratio", 4))
        vision = Widths(blocks=len(visual.blocks), hidden=hidden, mlp=mlp, block_params=count(visual.blocks[0]),
                        weight_bytes=weight_element_bytes(visual.blocks[0]))
    decoder = None
    decoder_vocab = decoder_hidden = 0
    if model.decoder_head is not None:
        dec = model.decoder_head.decoder
        dc = dec.config
        dhead = getattr(dc, "head_dim", None) or dc.hidden_size // dc.num_attention_heads
        dblocks = list(dec.model.layers)
        decoder = Widths(blocks=len(dblocks), hidden=dc.hidden_size, query=dc.num_attention_heads * dhead,
                         kv=dc.num_key_value_heads * dhead, mlp=dc.intermediate_size,
                         block_params=count(dblocks[0]) if dblocks else 0,
                         weight_bytes=weight_element_bytes(dblocks[0]) if dblocks else 4)
        decoder_vocab, decoder_hidden = dc.vocab_size, dc.hidden_size
    towers = [(language, blocks[0] if blocks else None)]
    if vision is not None:
        towers.append((vision, visual.blocks[0]))
    if decoder is not None:
        towers.append((decoder, dblocks[0] if dblocks else None))
    largest = max(widths.block_params for widths, _ in towers)
    largest_bytes = max(held_bytes(block.parameters()) if block is not None else 0 for _, block in towers)
    return Architecture(language, vision, decoder, text.vocab_size, decoder_vocab, decoder_hidden,
                        sum(p.numel() for p in model.parameters()), largest,
                        weight_bytes=held_bytes(model.parameters()),
                        trainable_bytes=held_bytes(p for p in model.parameters() if p.requires_grad),
                        largest_block_bytes=largest_bytes)


@dataclass
class Workload:
    """What one process computes per step: items per pass, their positions, their images."""

    queries: int
    positives: int
    negatives: int
    tokens: int  # positions per item (padded or packed: what the passes compute), latent block included
    patches: int = 0  # vision patches per item (0: text only)
    decoder_tokens: int = 16  # target tokens the decoder head reads per query (+ the K soft-prefix states)
    num_reason_tokens: int = 8


@dataclass
class Setup:
    """How a process runs (the weights' dtypes are the model's own: :class:`Architecture`)."""

    strategy: str = "ddp"  # ddp | fsdp | zero2 | zero3
    world: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    grad_cache_chunk: int | None = None

    @property
    def autocast(self) -> bool:
        return self.mixed_precision in ("bf16", "fp16")

    @property
    def sharded_params(self) -> bool:
        return self.strategy in ("fsdp", "zero3")

    @property
    def sharded_grads(self) -> bool:
        return self.strategy in ("fsdp", "zero2", "zero3")


@dataclass
class Estimate:
    weights: float
    gradients: float
    optimizer: float
    optimizer_step: float
    activations: float
    transient: float
    peak: float
    parts: dict = field(default_factory=dict)

    def gib(self) -> dict:
        return {k: (v / GIB if isinstance(v, (int, float)) else v) for k, v in asdict(self).items() if k != "parts"}


def estimate(arch: Architecture, trainable: int, trains: dict, work: Workload, setup: Setup,
             chunk: int | None = None) -> Estimate:
    """The peak bytes of one process for one stage.

    ``trainable``: the number of trainable parameters (their bytes as held are ``arch.trainable_bytes``;
    ``arch`` is read from the model cast as the trainer holds it in this stage); ``trains``: which parts have trainable parameters or need a
    gradient through them: ``language`` (any block of the language model, LoRA included, or anything
    before it: the latent embeddings), ``vision`` (the vision tower), ``decoder`` (the decoder head).
    ``chunk``: GradCache chunk (default ``setup.grad_cache_chunk``; None or >= the batch: whole batch).
    """
    chunk = setup.grad_cache_chunk if chunk is None else chunk
    weights, gradients, optimizer, step = _weight_state_bytes(arch, trainable, setup)
    static = weights + optimizer
    items = max(work.queries, work.positives, work.negatives)
    whole = chunk is None or chunk >= items

    def pass_activations(n: int, with_decoder: bool) -> tuple[float, float]:
        return _pass_activations(arch, trains, work, setup, n, with_decoder)

    if whole:
        passes = [pass_activations(work.queries, True), pass_activations(work.positives, False),
                  pass_activations(work.negatives, False) if work.negatives else (0.0, 0.0)]
        activations = sum(k for k, _ in passes)
        transient = max(t for _, t in passes)
        at_backward = static + activations + transient + gradients
    else:
        kept, transient = pass_activations(min(chunk, items), True)
        no_grad_pass = pass_activations(min(chunk, items), False)[1]
        activations = kept
        at_backward = static + gradients + kept + transient
        at_backward = max(at_backward, static + no_grad_pass)
    at_step = static + gradients + step
    peak = max(at_backward, at_step)
    return Estimate(weights, gradients, optimizer, step, activations, transient, peak,
                    {"whole_batch": whole, "chunk": None if whole else chunk})


def _weight_state_bytes(arch: Architecture, trainable: int, setup: Setup) -> tuple[float, float, float, float]:
    """(weights, gradients, optimizer state, optimizer step's temporaries) one process holds."""
    world = setup.world
    deepspeed = setup.strategy in ("zero2", "zero3")
    if deepspeed and setup.autocast:
        # DeepSpeed casts the module's parameters to 16 bits; fp32 master weights and moments, partitioned,
        # and fp32 gradient partitions live in its optimizer
        weights, block, gradients = arch.total_params * 2, arch.largest_block_params * 2, trainable * 2
        optimizer, step = trainable * (4 + 8 + 4), trainable * 4
    else:  # the parameters as the trainer holds them: float32 masters for what trains, model.dtype the rest
        weights, block, gradients = arch.weight_bytes, arch.largest_block_bytes, arch.trainable_bytes
        optimizer = step = 2 * arch.trainable_bytes
        if setup.strategy == "zero2":  # ZeRO-1/2 updates an fp32 copy of its partition, whatever the weights hold
            optimizer += trainable * 4
    if setup.sharded_params:
        weights /= world
        if world > 1:
            weights += 2 * block  # gathered blocks: the current one and the next
    if setup.sharded_grads:
        gradients, optimizer, step = gradients / world, optimizer / world, step / world
    return weights, gradients, optimizer, step


def _pass_activations(arch: Architecture, trains: dict, work: Workload, setup: Setup, n: int,
                      with_decoder: bool) -> tuple[float, float]:
    """(kept for the backward, transient peak on top) of one forward pass over ``n`` items."""
    positions = n * work.tokens
    lang = arch.language
    b = lang.compute_bytes(setup)
    kept = transient = 0.0
    if trains["language"]:
        if trains["language_weights"] or not setup.gradient_checkpointing:
            # autocast caches the 16-bit copies of float32 weights that train; a frozen weight's copy is
            # only kept by autograd, which a checkpointed block does not do
            kept += lang.cast_copies(setup)
        per_block = lang.saved_per_position("language", setup, trains["language_weights"], trains["lora_dropout"])
        if setup.gradient_checkpointing:
            kept += positions * lang.blocks * lang.hidden * lang.weight_bytes  # block inputs (residual stream)
            # one block recomputed in the backward, with its gradients' temporaries
            transient = max(transient, positions * (per_block + 0.5 * lang.transient_per_position(b)))
        else:
            kept += positions * lang.blocks * per_block
        kept += positions * lang.hidden * (b + 4)  # embeddings in, final norm
    transient = max(transient, positions * lang.transient_per_position(b))
    if arch.vision is not None and work.patches:
        patches = n * work.patches
        v = arch.vision
        vb = v.compute_bytes(setup)
        if trains["vision"]:
            kept += v.cast_copies(setup)
            kept += patches * v.blocks * v.saved_per_position("vision", setup, True)
        transient = max(transient, patches * (v.transient_per_position(vb) + v.hidden * vb))
    if with_decoder and arch.decoder is not None and trains["decoder_runs"]:
        tokens = n * (work.decoder_tokens + work.num_reason_tokens)
        d = arch.decoder
        kept += d.cast_copies(setup)
        kept += tokens * d.blocks * d.saved_per_position("language", setup, trains["decoder_weights"])
        logits = n * work.decoder_tokens * arch.decoder_vocab
        kept += logits * (d.compute_bytes(setup) + 4)  # the logits and their fp32 copy for the loss
        transient = max(transient, logits * 4)  # the loss's softmax
    return kept, transient


def largest_chunk(arch: Architecture, trainable: int, trains: dict, work: Workload, setup: Setup,
                  budget_bytes: float, margin: float = 0.9) -> int | None:
    """The largest GradCache chunk whose estimated peak is at most ``margin x budget_bytes``; None when
    not even a chunk of one item fits. The whole batch when it fits."""
    items = max(work.queries, work.positives, work.negatives)
    fits = lambda c: estimate(arch, trainable, trains, work, setup, c).peak <= margin * budget_bytes  # noqa: E731
    if not fits(1):
        return None
    low, high = 1, items
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def trains_of(model) -> dict:
    """Which towers a stage trains or backpropagates through, from ``requires_grad`` (LoRA included)."""
    named = dict(model.named_parameters())
    host = model.adapter.lora_host + "."
    vision_prefix = "backbone.model.visual."
    lm_weights = any(p.requires_grad for n, p in named.items() if n.startswith(host))
    latent = named.get("latent_embeddings")
    vision = any(p.requires_grad for n, p in named.items() if n.startswith(vision_prefix))
    decoder_weights = any(p.requires_grad for n, p in named.items() if n.startswith("decoder_head.decoder."))
    return {"language": lm_weights or bool(latent is not None and latent.requires_grad) or vision,
            "language_weights": lm_weights, "vision": vision, "lora_dropout": lora_dropout_inputs(model),
            "decoder_runs": model.decoder_head is not None, "decoder_weights": decoder_weights}


def lora_dropout_inputs(model) -> float:
    """Elements per position and block that LoRA's dropout keeps: the input widths of the adapted
    matrices of one language-model block, when their dropout is on and they train."""
    lm = model.adapter.language_model(model.backbone)
    blocks = list(getattr(lm, "layers", []))
    if not blocks:
        return 0.0
    total = 0
    for module in blocks[0].modules():
        dropout = getattr(module, "lora_dropout", None)
        if dropout is None or not any(p.requires_grad for n, p in module.named_parameters() if "lora_" in n):
            continue
        if any(isinstance(d, torch.nn.Dropout) and d.p > 0 for d in dropout.values()):
            total += module.in_features
    return float(total)


def strategy_name(recipe, world: int) -> str:
    """ddp, fsdp, zero2 or zero3, from the recipe (``auto`` is ddp unless a launcher says otherwise)."""
    import json
    from pathlib import Path

    name = recipe.train.strategy
    if name == "deepspeed":
        stage = 2
        if recipe.train.deepspeed_config and Path(recipe.train.deepspeed_config).is_file():
            stage = json.loads(Path(recipe.train.deepspeed_config).read_text()).get("zero_optimization", {}).get(
                "stage", 2)
        return f"zero{stage}"
    return "ddp" if name == "auto" else name


def setup_of(recipe, world: int, **changes) -> Setup:
    setup = Setup(strategy=strategy_name(recipe, world), world=world, mixed_precision=recipe.train.mixed_precision,
                  gradient_checkpointing=recipe.train.gradient_checkpointing,
                  grad_cache_chunk=recipe.train.grad_cache_chunk)
    for key, value in changes.items():
        setattr(setup, key, value)
    return setup


def parameters_by_dtype(model) -> dict[str, int]:
    """Parameter counts per dtype name, largest first (``{"bfloat16": ..., "float32": ...}``)."""
    counts: dict[str, int] = {}
    for p in model.parameters():
        name = str(p.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + p.numel()
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def plan_stage(recipe, model, stage, settings: PlanSettings) -> dict:
    """The estimates of one stage (the model as the trainer holds it then: ``requires_grad`` set for the
    stage, LoRA added, parameters cast by :func:`lame.training.params.master_weights`): the recipe's own
    setup, the four combinations of gradient checkpointing and GradCache, and the largest chunk for
    ``settings.gpu_memory_gib``."""
    arch = architecture_of(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trains = trains_of(model)
    data = recipe.data
    merge = 4 if arch.vision is not None else 1
    work = Workload(queries=stage.batch_size, positives=stage.batch_size * data.positives_per_query,
                    negatives=stage.batch_size * data.negatives_per_query, tokens=settings.seq_len,
                    patches=settings.image_tokens * merge if arch.vision is not None else 0,
                    decoder_tokens=settings.decoder_tokens, num_reason_tokens=model.config.num_reason_tokens)
    own = setup_of(recipe, settings.world)
    chunk = recipe.train.grad_cache_chunk
    variants = {}
    for checkpointing in (False, True):
        for grad_cache in (None, chunk or max(1, stage.batch_size // 8)):
            key = f"{'checkpointing' if checkpointing else 'no checkpointing'}, " + (
                f"GradCache chunk {grad_cache}" if grad_cache else "whole batch")
            setup = setup_of(recipe, settings.world, gradient_checkpointing=checkpointing, grad_cache_chunk=grad_cache)
            variants[key] = estimate(arch, trainable, trains, work, setup).gib()
    out = {"stage": stage.name, "setup": asdict(own), "workload": asdict(work), "trainable": trainable,
           "parameters_by_dtype": parameters_by_dtype(model),
           "recipe": estimate(arch, trainable, trains, work, own).gib(), "variants": variants}
    if settings.gpu_memory_gib:
        budget = settings.gpu_memory_gib * GIB
        best = largest_chunk(arch, trainable, trains, work, own, budget)
        out["gpu_memory_gib"] = settings.gpu_memory_gib
        out["largest_chunk"] = best
        if best is not None:
            out["largest_chunk_peak"] = estimate(arch, trainable, trains, work, own, best).gib()["peak"]
    return out


def format_plan(plan: dict) -> str:
    r = plan["recipe"]
    setup = plan["setup"]
    chunk = f"GradCache chunk {setup['grad_cache_chunk']}" if setup["grad_cache_chunk"] else "whole batch"
    held = " + ".join(f"{n / 1e6:,.1f}M {dtype}" for dtype, n in plan["parameters_by_dtype"].items())
    if setup["strategy"] in ("zero2", "zero3") and setup["mixed_precision"] != "no":
        held = f"{sum(plan['parameters_by_dtype'].values()) / 1e6:,.1f}M {setup['mixed_precision']} (DeepSpeed's cast)"
    lines = [f"  memory per process ({setup['strategy']}, {setup['world']} process(es), weights {held}, "
             f"precision {setup['mixed_precision']}, "
             f"{'checkpointing' if setup['gradient_checkpointing'] else 'no checkpointing'}, {chunk}; "
             f"{plan['workload']['tokens']} positions per item):",
             f"    weights {r['weights']:.2f} GiB + gradients {r['gradients']:.2f} + optimizer {r['optimizer']:.2f} "
             f"(+ {r['optimizer_step']:.2f} during the step) + activations {r['activations']:.2f} "
             f"+ transient {r['transient']:.2f} -> peak {r['peak']:.2f} GiB"]
    for key, v in plan["variants"].items():
        lines.append(f"    {key:<44} peak {v['peak']:7.2f} GiB (activations {v['activations']:.2f})")
    if "largest_chunk" in plan:
        best = plan["largest_chunk"]
        if best is None:
            lines.append(f"    --gpu-memory {plan['gpu_memory_gib']:g} GiB: not even one item per chunk fits")
        else:
            lines.append(f"    --gpu-memory {plan['gpu_memory_gib']:g} GiB: largest GradCache chunk that fits (90 %): "
                         f"{best} (peak {plan['largest_chunk_peak']:.2f} GiB)")
    return "\n".join(lines)


def format_dry_run(recipe_path: str, recipe, stages: list[dict], missing: list[str]) -> str:
    """What `lame train --dry-run` prints: the recipe's validity, what this machine lacks, and per stage
    its parameter groups and memory plan (``stages`` from :func:`lame.training.trainer.dry_run`)."""
    lines = [f"recipe {recipe_path}: valid ({len(recipe.stages)} stages)"]
    lines += [f"  not on this machine: {line}" for line in missing]
    if any(line.startswith("model.") for line in missing):
        lines.append("  model folders missing: architecture from lame's copy of their config.json, no weights "
                     "(meta device)")
    for stage in stages:
        lines.append(f"stage {stage['stage']!r}: {stage['steps']} steps")
        for row in stage["groups"]:
            lr = f"  lr {row['lr']:.1e}" if row["lr"] else ""
            lines.append(f"  {row['pattern']:<50} {row['parameters']:>14,d} params{lr}")
        lines.append(format_plan(stage["memory"]))
    return "\n".join(lines)

