"""The training objective as the training step computes it (lame.training.objective through
compute_gradients): hand-computed terms and totals on a tiny model, the effect of each weight on
the gradient, where the weights come from, and the zero-weight decoder pass of lockstep."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from helpers import gradients, sum_batch, sum_record, write_jsonl
from tolerances import GRADIENT, scaled

from lame import LaMEConfig
from lame.losses import diversity_loss, info_nce
from lame.training import trainer as trainer_module
from lame.training.objective import LaMELoss, LossWeights, Normalizers, loss_weights
from lame.training.recipe import StageSpec, recipe_from_dict
from lame.training.trainer import Trainer

TERMS = ("contrastive", "reconstruction", "diversity")


def by_hand(model, batch, weights: LossWeights) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The three terms and the gradients of their weighted sum, from the loss functions directly."""
    model.zero_grad(set_to_none=True)
    q = model(model.collate(batch.queries))
    pos = model(model.collate(batch.positives)).embeddings
    neg = model(model.collate(batch.negatives)).embeddings
    size = len(batch)
    terms = {"contrastive": info_nce(q.embeddings, pos.reshape(size, -1, pos.shape[-1]),
                                     neg.reshape(size, -1, neg.shape[-1]), temperature=model.config.temperature,
                                     labels=batch.labels)}
    rows = [i for i, t in enumerate(batch.targets) if t]
    # the decoder's mean token cross-entropy over every target token of the batch
    terms["reconstruction"] = model.decoder_head.loss(q.reason_states[rows], [batch.targets[i] for i in rows])
    terms["diversity"] = diversity_loss(q.reason_states)
    total = sum(getattr(weights, name) * terms[name] for name in TERMS)
    total.backward()
    grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    values = {name: float(value.detach()) for name, value in terms.items()}
    values["total"] = float(total.detach())
    return values, grads


@pytest.fixture(scope="module")
def batch(train_model):
    return sum_batch(train_model)


@pytest.mark.parametrize("chunk", [None, 2], ids=["full_batch", "grad_cache"])
def test_step_is_the_hand_computed_weighted_sum(train_model, batch, chunk):
    weights = LossWeights(0.7, 0.4, 2.5)
    expected, expected_grads = by_hand(train_model, batch, weights)
    losses, grads = gradients(train_model, batch, weights, chunk)
    for name in (*TERMS, "total"):
        assert getattr(losses, name) == pytest.approx(expected[name], rel=GRADIENT), name
    assert expected["reconstruction"] > 1 and expected["diversity"] > 1e-3  # every term is really there
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=scaled(GRADIENT, grad), rtol=0,
                                   msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def base_step(train_model, batch):
    weights = LossWeights(1.0, 0.5, 0.3)
    return weights, gradients(train_model, batch, weights)


@pytest.mark.parametrize("term", TERMS)
def test_raising_one_weight_adds_that_terms_gradient(train_model, batch, base_step, term):
    """d(gradient)/d(weight) is the gradient of that term alone, and nothing else moves."""
    weights, (base_losses, base) = base_step
    delta = 0.8
    bumped_losses, bumped = gradients(train_model, batch, replace(weights, **{term: getattr(weights, term) + delta}))
    alone_losses, alone = gradients(train_model, batch, LossWeights(**{t: float(t == term) for t in TERMS}))
    # differences of two steps' values: rounded relative to the steps' own scale, not to the difference's
    assert bumped_losses.total - base_losses.total == pytest.approx(
        delta * getattr(alone_losses, term), abs=scaled(GRADIENT, bumped_losses.total, base_losses.total))
    assert max(g.abs().max() for g in alone.values()) > 1e-4  # the term has a gradient to add
    for name in base:
        torch.testing.assert_close(bumped[name] - base[name], delta * alone[name], rtol=0,
                                   atol=scaled(GRADIENT, bumped[name], base[name], delta * alone[name]),
                                   msg=lambda m: f"{name}: {m}")


def test_weights_come_from_the_stage_else_the_model_config():
    config = LaMEConfig(reconstruction_weight=0.25, diversity_weight=0.3)
    assert loss_weights(config) == LossWeights(1.0, 0.25, 0.3)
    assert loss_weights(config, StageSpec("s", 1)) == LossWeights(1.0, 0.25, 0.3)
    stage = StageSpec("s", 1, contrastive_weight=2.0, reconstruction_weight=0.0)
    assert loss_weights(config, stage) == LossWeights(2.0, 0.0, 0.3)  # 0 is a value, not "unset"
    assert loss_weights(config, StageSpec("s", 1, diversity_weight=1.5)) == LossWeights(1.0, 0.25, 1.5)


def test_the_trainer_trains_each_stage_with_its_resolved_weights(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "train.jsonl", [sum_record(i) for i in range(8)])
    heads = [{"pattern": "latent_embeddings", "lr": 1e-3}]
    raw = {"model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny",
                     "lame": {"num_reason_tokens": 2, "reconstruction_weight": 0.25, "diversity_weight": 0.3}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "train": {"output_dir": str(tmp_path / "out"), "tensorboard": False, "featurize_workers": 0},
           "stages": [{"name": "a", "steps": 1, "batch_size": 2, "trainable": heads},
                      {"name": "b", "steps": 1, "batch_size": 2, "trainable": heads, "reconstruction_weight": 2.0,
                       "contrastive_weight": 0.5}]}
    seen = []
    real = trainer_module.compute_gradients

    def record(model, batch, weights, *args, **kwargs):
        seen.append(weights)
        return real(model, batch, weights, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "compute_gradients", record)
    Trainer(recipe_from_dict(raw, tmp_path), show_progress=False).run()
    assert seen == [LossWeights(1.0, 0.25, 0.3), LossWeights(0.5, 2.0, 0.3)]


def test_lockstep_runs_the_decoder_with_weight_zero_when_no_query_has_a_target(train_model, batch):
    """Under FSDP / ZeRO every process must join the decoder's pass even without targets of its own."""
    out = train_model(train_model.collate(batch.queries[:2]))
    others_have_targets = Normalizers(decoder_tokens=10, lm_tokens=0, queries=4, world=2)
    for lockstep in (False, True):
        train_model.zero_grad(set_to_none=True)
        loss = LaMELoss(train_model, LossWeights(1.0, 1.0, 0.0), lockstep=lockstep)
        reconstruction, _ = loss.side_terms(out, [None, None], others_have_targets)
        assert float(reconstruction.detach()) == 0.0
        if lockstep:
            (reconstruction + out.embeddings.sum() * 0).backward()
            decoder = [p.grad for n, p in train_model.named_parameters() if n.startswith("decoder_head.")]
            assert all(g is not None and not g.any() for g in decoder)  # it ran, and added nothing
        else:
            assert not reconstruction.requires_grad  # the decoder did not run
    train_model.zero_grad(set_to_none=True)


def test_symmetric_contrastive_goes_through_the_loss_object(train_model, batch):
    """The config's symmetric_contrastive reaches the one loss object: the step's contrastive term is
    the mean of both directions computed by hand from the same embeddings."""
    weights = LossWeights(1.0, 0.0, 0.0)
    plain, _ = gradients(train_model, batch, weights)
    train_model.config.symmetric_contrastive = True
    try:
        both, grads = gradients(train_model, batch, weights)
        chunked, chunked_grads = gradients(train_model, batch, weights, chunk=2)
    finally:
        train_model.config.symmetric_contrastive = False
    with torch.no_grad():
        q = train_model(train_model.collate(batch.queries)).embeddings.double()
        pos = train_model(train_model.collate(batch.positives)).embeddings.double().reshape(len(batch), 2, -1)
    t, labels = train_model.config.temperature, batch.labels.tolist()
    reverse = []
    for owner in range(len(batch)):
        for v in pos[owner]:
            scores = {j: float(v @ q[j]) / t for j in range(len(batch)) if j == owner or labels[j] != labels[owner]}
            reverse.append(torch.logsumexp(torch.tensor(list(scores.values())), 0).item() - scores[owner])
    expected = (plain.contrastive + sum(reverse) / len(reverse)) / 2
    assert both.contrastive == pytest.approx(expected, rel=GRADIENT)
    assert chunked.contrastive == pytest.approx(both.contrastive, rel=GRADIENT)  # GradCache: the same loss
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=scaled(GRADIENT, grad), rtol=0,
                                   msg=lambda m: f"{name}: {m}")
