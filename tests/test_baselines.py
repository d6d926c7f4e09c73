"""The in-framework baselines (discriminative, sequential latent, explicit CoT) on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import build_tiny_baseline, noise, sum_record, write_jsonl
from tolerances import FORWARD, GRADIENT, UNIT_NORM, float32_sum
from lame import LaMEModel
from lame.modeling.baselines import (
    CoTOutput,
    ExplicitCoTModel,
    SequentialLatentModel,
    variant_of,
)
from lame.training.recipe import recipe_from_dict
from lame.losses import info_nce
from lame.training.objective import LossWeights
from lame.training.steps import TrainBatch, compute_gradients
from lame.training.trainer import Trainer

STEPS, NEW_TOKENS = 3, 6


def image(seed: int, size: int = 40) -> Image.Image:
    return noise((size, size), seed, high=255)


MIXED = [
    "a text query",
    image(0),
    ["two images", image(1), "between", image(2)],
    {"text": "find this digit", "image": image(3), "instruction": "Retrieve the matching image."},
]

BUILD = {
    "discriminative": lambda: build_tiny_baseline("discriminative"),
    "sequential": lambda: build_tiny_baseline("sequential", latent_steps=STEPS),
    "cot": lambda: build_tiny_baseline("cot", cot_max_new_tokens=NEW_TOKENS),
}


@pytest.fixture(scope="module", params=sorted(BUILD))
def baseline(request):
    return BUILD[request.param]().eval()


class CallCounter:
    """Counts calls of a module (forward pre-hook)."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


# ------------------------------------------------------------------------------------- every baseline
def test_variant_classes():
    assert type(BUILD["discriminative"]()) is LaMEModel
    assert isinstance(BUILD["sequential"](), SequentialLatentModel)
    assert isinstance(BUILD["cot"](), ExplicitCoTModel)


def test_variant_registry_resolves_lazily_without_an_import_cycle():
    import ast
    import inspect

    import lame.modeling.lame as lame_module
    from lame.modeling.variants import variant_class

    imports = [node for node in ast.walk(ast.parse(inspect.getsource(lame_module)))
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("baselines" in (getattr(node, "module", None) or "") or
                   any("baselines" in alias.name for alias in node.names) for node in imports)
    assert variant_class("lame") is LaMEModel
    assert (variant_class("sequential"), variant_class("cot")) == (SequentialLatentModel, ExplicitCoTModel)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        variant_class("nope")


def test_embeddings_deterministic_unit_norm_and_batch_independent(baseline):
    first = baseline.encode(MIXED, batch_size=len(MIXED))
    again = baseline.encode(MIXED, batch_size=len(MIXED))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=UNIT_NORM, rtol=0)
    alone = np.stack([baseline.encode([item])[0] for item in MIXED])
    np.testing.assert_allclose(first, alone, atol=FORWARD, rtol=0)
    assert np.abs(baseline.similarity(first, first) - np.eye(len(MIXED))).max() > 1e-3


def test_save_and_reload_identical(baseline, tmp_path):
    baseline.save_pretrained(tmp_path / "m")
    loaded = LaMEModel.from_pretrained(tmp_path / "m")
    assert type(loaded) is type(baseline)
    assert loaded.config == baseline.config
    # allclose, not equal: the reloaded vision tower differs from the built one by ~1e-8 (upstream, any variant)
    np.testing.assert_allclose(loaded.encode(MIXED, batch_size=2), baseline.encode(MIXED, batch_size=2), atol=FORWARD,
                               rtol=0)


def test_variant_of_shares_the_backbone():
    lame = build_tiny_baseline("discriminative", num_reason_tokens=8)
    seq = variant_of(lame, "sequential", latent_steps=2)
    cot = variant_of(lame, "cot", cot_max_new_tokens=2)
    assert seq.backbone is lame.backbone and cot.backbone is lame.backbone
    assert (seq.config.num_reason_tokens, cot.config.num_reason_tokens) == (0, 0)
    assert seq.encode(MIXED[:2]).shape == cot.encode(MIXED[:2]).shape == lame.encode(MIXED[:2]).shape


def test_variant_of_never_casts_the_shared_backbone():
    """A bfloat16 backbone beside float32 latent vectors (a bf16 training run): the new variant's own
    parts are float32, the backbone stays bfloat16, and the first model still embeds as before."""
    lame = build_tiny_baseline("discriminative", num_reason_tokens=2)
    lame.backbone.to(torch.bfloat16)
    first = lame.encode(MIXED[:2])
    seq = variant_of(lame, "sequential", latent_steps=2)
    assert {p.dtype for p in lame.backbone.parameters()} == {torch.bfloat16}
    assert seq.latent_embeddings.dtype == torch.float32 and seq.backbone is lame.backbone
    assert all(p.dtype == torch.float32 for p in seq.embedding_head.parameters())
    np.testing.assert_array_equal(lame.encode(MIXED[:2]), first)
    assert np.isfinite(seq.encode(MIXED[:2])).all()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_backbone_families(family):
    """Multimodal RoPE positions (and Qwen3-VL's deepstack) with a cache: batch-independent embeddings."""
    items = [MIXED[0], MIXED[2]]
    for model in (build_tiny_baseline("sequential", family, latent_steps=2),
                  build_tiny_baseline("cot", family, cot_max_new_tokens=3)):
        together = model.encode(items, batch_size=2)
        alone = np.stack([model.encode([item])[0] for item in items])
        np.testing.assert_allclose(together, alone, atol=FORWARD, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=UNIT_NORM, rtol=0)


def test_cot_without_rationale_embeds_after_the_prompt():
    model = BUILD["cot"]().eval()
    model.generate_rationale = False
    direct = model.encode(MIXED, batch_size=2)
    with torch.inference_mode():
        forced = model(model.collate(model.featurize(MIXED)), generate=False).embeddings.numpy()
    np.testing.assert_allclose(direct, forced, atol=FORWARD, rtol=0)
    model.generate_rationale = True
    assert np.abs(model.encode(MIXED, batch_size=2) - direct).max() > 1e-3


def test_documents_are_embedded_as_training_embeds_positives():
    model = BUILD["cot"]().eval()
    with torch.inference_mode():
        forced = model(model.collate(model.featurize(MIXED)), generate=False).embeddings.numpy()
    as_documents = model.encode(MIXED, batch_size=2, role="document")
    np.testing.assert_allclose(as_documents, forced, atol=FORWARD, rtol=0)  # no rationale generated
    assert model.generate_rationale  # the role lasts for the call only
    as_queries = model.encode(MIXED, batch_size=2, role="query")
    np.testing.assert_array_equal(as_queries, model.encode(MIXED, batch_size=2))  # no role: a query, the same call
    assert np.abs(as_queries - as_documents).max() > 1e-3
    with pytest.raises(ValueError, match="role must be"):
        model.encode(MIXED, role="passage")


@pytest.mark.parametrize("name", ["discriminative", "sequential"])
def test_one_pass_models_embed_queries_and_documents_alike(name):
    model = BUILD[name]().eval()
    np.testing.assert_array_equal(model.encode(MIXED[:2], role="document"), model.encode(MIXED[:2], role="query"))


# ------------------------------------------------------------------------------------ sequential latent
def test_sequential_runs_k_steps_and_positions_continue_the_prompt():
    model = BUILD["sequential"]().eval()
    batch = model.collate(model.featurize(MIXED))
    with CallCounter(model.backbone.model.language_model) as counter, torch.inference_mode():
        out = model(batch)
    assert counter.calls == 1 + STEPS  # the prompt once, then one call per latent step
    assert out.steps == STEPS and out.reason_states.shape[:2] == (len(MIXED), STEPS)
    # the head again on the same states: at most a 64-term projection and a 64-d normalisation apart
    torch.testing.assert_close(out.embeddings, model.embedding_head(out.reason_states[:, -1:]),
                               atol=float32_sum(64 + 64 + 2), rtol=0)

    # The positions given to the new steps are what get_rope_index gives text tokens appended to the prompt.
    extended = {k: v for k, v in batch.items()}
    extra = torch.full((len(MIXED), STEPS), model.tokenizer.pad_token_id)
    extended["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
    extended["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(extra)], dim=1)
    extended["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(extra).int()], dim=1)
    full = model.adapter.positions(model.backbone, extended)
    prompt = model.adapter.positions(model.backbone, batch)
    expected = prompt[:, :, -1:] + torch.arange(1, STEPS + 1)
    torch.testing.assert_close(full[:, :, -STEPS:], expected)


def test_sequential_without_cache_matches_cached_and_gradients_flow_through_steps():
    model = BUILD["sequential"]().eval()
    batch = model.collate(model.featurize(MIXED))
    cached = model(batch)
    model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    recomputed = model(batch)
    torch.testing.assert_close(recomputed.embeddings, cached.embeddings, atol=FORWARD, rtol=0)
    # The embedding is the last step's output; the learned [EMBED] vector reaches it only through the steps.
    recomputed.embeddings.sum().backward()
    assert model.latent_embeddings.grad is not None and model.latent_embeddings.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------- explicit CoT
def test_cot_generates_exactly_n_tokens_with_forced_length():
    model = BUILD["cot"]().eval()
    batch = model.collate(model.featurize(MIXED))
    with torch.inference_mode():
        model.rationale_end_id = int(model(batch).generated_ids[0, 0])  # unforced, row 0 would now stop at once
        assert model(batch).generated_lengths[0] == 1
    model.force_length = True
    calls = []
    original = model.backbone.generate

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((kwargs["input_ids"].shape[1], result.sequences.shape[1]))
        return result

    model.backbone.generate = spy
    with CallCounter(model.backbone.model.language_model) as counter, torch.inference_mode():
        out = model(batch)
    assert isinstance(out, CoTOutput)
    (prompt_length, total_length), = calls
    assert total_length - prompt_length == NEW_TOKENS
    assert out.generated_ids.shape == (len(MIXED), NEW_TOKENS)
    assert out.generated_lengths.tolist() == [NEW_TOKENS] * len(MIXED)
    assert not (out.generated_ids == model.rationale_end_id).any()  # EOS suppressed while forcing the length
    # N generated tokens take N cached calls (prefill + N-1 steps); one more call embeds after the rationale.
    assert counter.calls == NEW_TOKENS + 1


def test_cot_stops_at_end_token_and_equals_teacher_forcing():
    """A row that stops early is padded and masked; the cached [EMBED] step equals one full teacher-forced
    pass over prompt + rationale + [EMBED], and the rationale is the full pass's greedy continuation."""
    model = BUILD["cot"]().eval()
    # A random tied LM head just copies its input token ("\n" forever); an untied random head varies.
    torch.manual_seed(0)
    head = model.backbone.get_output_embeddings()
    head.weight = torch.nn.Parameter(torch.randn_like(head.weight))
    with torch.inference_mode():
        first = model(model.collate(model.featurize(MIXED))).generated_ids
    # Pretend a token the rows generate at different times is the end token: rows then stop at different steps.
    def stop_lengths(token):
        hits = (first == token).int()
        return torch.where(hits.any(1), hits.argmax(1) + 1, NEW_TOKENS).tolist()

    token = max(set(first.flatten().tolist()), key=lambda t: len(set(stop_lengths(t))))
    expected = stop_lengths(token)
    assert len(set(expected)) > 1
    model.rationale_end_id = token
    features = model.featurize(MIXED)
    with torch.inference_mode():
        out = model(model.collate(features))
    lengths = out.generated_lengths.tolist()
    assert lengths == expected
    alone = np.stack([model.encode([item])[0] for item in MIXED])
    np.testing.assert_allclose(out.embeddings.numpy(), alone, atol=FORWARD, rtol=0)

    n_latent = model.config.num_latent_tokens
    for row, f in enumerate(features):
        rationale = out.generated_ids[row, : lengths[row]]
        ids = torch.cat([f.input_ids[:-n_latent], rationale, f.input_ids[-n_latent:]])
        forced = type(f)(ids, f.pixel_values, f.image_grid_thw)
        with torch.inference_mode():
            full = model(model.collate([forced]), generate=False)
            logits = model.backbone.get_output_embeddings()(full.hidden_states[0])
        torch.testing.assert_close(full.embeddings[0], out.embeddings[row], atol=FORWARD, rtol=0)
        start = len(f) - n_latent - 1
        greedy = logits[start: start + lengths[row]].argmax(-1)
        assert greedy.tolist() == rationale.tolist()


def test_cot_teacher_forcing_loss_and_gradients():
    model = BUILD["cot"]().train()
    queries = [model.rationale_features(MIXED[i], r) for i, r in enumerate(["because three plus four", None,
                                                                            "the first image", "seven"])]
    assert queries[1].lm_tokens == 0 and all(q.lm_tokens > 1 for q in queries[::2])
    positives = [model.featurizer(x) for x in ["seven", "zero", "two", "nine"]]
    batch = TrainBatch(queries, positives, [], [None] * 4, torch.arange(4))
    losses = compute_gradients(model, batch, LossWeights(1.0, 0.5, 0.0))
    # by hand: the rationale term is the summed LM cross-entropy over every rationale token
    with torch.no_grad():
        out = model(model.collate(queries))
        contrastive = info_nce(out.embeddings, model(model.collate(positives)).embeddings,
                               temperature=model.config.temperature, labels=torch.arange(4))
    reconstruction = float(out.lm_loss) / sum(q.lm_tokens for q in queries)
    assert losses.contrastive == pytest.approx(float(contrastive), rel=GRADIENT)
    assert losses.reconstruction == pytest.approx(reconstruction, rel=GRADIENT) and reconstruction > 0
    assert losses.total == pytest.approx(float(contrastive) + 0.5 * reconstruction, rel=GRADIENT)
    assert model.latent_embeddings.grad.abs().sum() > 0
    assert model.backbone.model.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    # The LM term is a token mean: with GradCache chunks it is the same number.
    model.zero_grad()
    chunked = compute_gradients(model, batch, LossWeights(1.0, 0.5, 0.0), chunk_size=2)
    assert chunked.reconstruction == pytest.approx(losses.reconstruction, rel=GRADIENT)
    assert chunked.contrastive == pytest.approx(losses.contrastive, rel=GRADIENT)


# ------------------------------------------------------------------------------------- through Trainer
@pytest.mark.parametrize("lame", [{"variant": "sequential", "latent_steps": 2},
                                  {"variant": "cot", "cot_max_new_tokens": 2}], ids=["sequential", "cot"])
def test_training_run_through_trainer(tmp_path, lame):
    write_jsonl(tmp_path / "train.jsonl", [sum_record(i) for i in range(12)])
    raw = {
        "model": {"backbone": "tiny:qwen2_vl", "decoder": None,
                  "lame": {"num_reason_tokens": 0, "temperature": 0.05, **lame}},
        "data": {"sources": [{"path": "train.jsonl"}]},
        "train": {"output_dir": str(tmp_path / "out"), "save_every": 100, "log_every": 1, "tensorboard": False,
                  "grad_cache_chunk": 2},
        "stages": [{"name": "only", "steps": 2, "batch_size": 4,
                    "trainable": [{"pattern": "latent_embeddings", "lr": 1e-2},
                                  {"pattern": "backbone.model.language_model.layers.1.*", "lr": 1e-2}]}],
    }
    trainer = Trainer(recipe_from_dict(raw, tmp_path), show_progress=False)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    final = trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    if lame["variant"] == "cot":
        assert all(r["reconstruction"] > 0 for r in rows)  # the rationale's LM loss
    after = dict(trainer.model.named_parameters())
    changed = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert "latent_embeddings" in changed
    assert any(k.startswith("backbone.model.language_model.layers.1.") for k in changed)
    assert not any(k.startswith("backbone.model.language_model.layers.0.") for k in changed)
    reloaded = LaMEModel.from_pretrained(Path(final))
    assert reloaded.config.variant == lame["variant"]
    # not equal: a reloaded vision tower differs from a built one by ~1e-8 (see test_save_and_reload_identical)
    np.testing.assert_allclose(reloaded.encode(MIXED[:2]), trainer.model.encode(MIXED[:2]), atol=FORWARD, rtol=0)


def test_roles_of_concurrent_encode_calls_do_not_mix():
    import copy
    from concurrent.futures import ThreadPoolExecutor

    model = BUILD["cot"]().eval()
    documents, queries = model.encode(MIXED[:2], role="document"), model.encode(MIXED[:2], role="query")
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda role: (role, model.encode(MIXED[:2], role=role)), ["document", "query"] * 4))
    for role, embeddings in runs:
        # the same batches, though concurrent calls may split their sums over fewer threads
        np.testing.assert_allclose(embeddings, documents if role == "document" else queries, atol=FORWARD, rtol=0)
    np.testing.assert_allclose(model.encode(MIXED[:2]), queries, atol=FORWARD, rtol=0)  # nothing left behind
    copy.deepcopy(model)  # the role state is not part of the model
