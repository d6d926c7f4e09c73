"""Model modes are arguments of a call, never state set on the model from outside: the ``role`` an item
is embedded as (every model class, through ``encode``, ``encode_query``/``encode_document`` and down to
``forward``), and the autograd mode ``encode`` runs under (``no_inference_mode``, what DeepSpeed ZeRO-3
evaluation needs). Packing as an argument is tested with the other packing tests (test_packing.py)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import HANG_GUARD_S, build_tiny_baseline, noise
from tolerances import FORWARD

from lame import build_tiny_model
from lame.modeling import baselines
from lame.modeling.baselines import CoTOutput
from lame.modeling.inference import no_inference_mode
from lame.modeling.roles import QueryDocumentEncoder, encode_as

ROLES = ("query", "document")
MODELS = {
    "lame": lambda: build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=2, use_decoder=False),
    "discriminative": lambda: build_tiny_baseline("discriminative"),
    "sequential": lambda: build_tiny_baseline("sequential", latent_steps=2),
    "cot": lambda: build_tiny_baseline("cot", cot_max_new_tokens=4),
}
ITEMS = ["a text query", noise((40, 40), 0, high=255),
         {"text": "find this digit", "image": noise((32, 32), 1, high=255), "instruction": "Retrieve it."}]
# The same items in another batch (other neighbours, other padding): positions are padding-aware, so
# only float32 rounding differs (tolerances.FORWARD, the bound of the tests of batch independence).
BATCH_TOLERANCE = FORWARD


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]().eval()


def record_forward(monkeypatch, model, seen: list, what=lambda batch, kwargs: kwargs.get("role")):
    """Replaces ``model.forward`` (this instance only) by one that appends ``what`` of each call to ``seen``."""
    real = model.forward

    def forward(batch, **kwargs):
        seen.append(what(batch, kwargs))
        return real(batch, **kwargs)

    monkeypatch.setattr(model, "forward", forward)


def test_every_model_takes_the_role_down_to_forward(model, monkeypatch):
    seen = []
    record_forward(monkeypatch, model, seen)
    results = {}
    for role in ROLES:
        by_method = getattr(model, f"encode_{role}")(ITEMS, batch_size=2)
        by_argument = model.encode(ITEMS, batch_size=2, role=role)
        np.testing.assert_array_equal(by_method, by_argument)
        results[role] = by_argument
    assert seen == ["query"] * 4 + ["document"] * 4  # two batches per call
    seen.clear()
    model.encode(ITEMS, batch_size=8)
    assert seen == [None]
    with torch.inference_mode():
        for role in ROLES:  # forward itself, one batch of all items
            direct = model(model.collate(model.featurize(ITEMS)), role=role).embeddings.float().numpy()
            np.testing.assert_allclose(direct, results[role], atol=BATCH_TOLERANCE)
    gap = np.abs(results["query"] - results["document"]).max()
    if model.config.variant == "cot":
        assert gap > 1e-3  # a query gets a rationale, a document none
    else:
        assert gap == 0.0  # one-pass models embed both alike
    for bad in (lambda: model.encode(ITEMS, role="passage"),
                lambda: model(model.collate(model.featurize(ITEMS[:1])), role="passage")):
        with pytest.raises(ValueError, match="role must be 'query', 'document' or None"):
            bad()


def test_the_cot_model_generates_no_rationale_for_documents():
    model = MODELS["cot"]().eval()
    batch = model.collate(model.featurize(ITEMS))
    with torch.inference_mode():
        query = model(batch, role="query")
        document = model(batch, role="document")
        forced = model(batch, generate=False)
    assert isinstance(query, CoTOutput) and query.generated_ids.shape == (len(ITEMS), 4)
    assert not isinstance(document, CoTOutput)  # the single pass: prompt, then [EMBED]
    torch.testing.assert_close(document.embeddings, forced.embeddings, atol=0, rtol=0)
    np.testing.assert_allclose(model.encode_document(ITEMS), forced.embeddings.numpy(), atol=BATCH_TOLERANCE)


def test_two_threads_embedding_with_different_roles_at_once_get_their_own_results(monkeypatch):
    """Both threads are inside ``forward`` together (a barrier) before either runs: a role kept anywhere but
    in the call itself would be seen by the other thread."""
    model = MODELS["cot"]().eval()
    expected = {role: model.encode(ITEMS[:2], role=role) for role in ROLES}
    barrier = threading.Barrier(2, timeout=HANG_GUARD_S)
    record_forward(monkeypatch, model, [], what=lambda batch, kwargs: barrier.wait())
    with ThreadPoolExecutor(2) as pool:
        got = dict(zip(ROLES, pool.map(lambda role: model.encode(ITEMS[:2], batch_size=2, role=role), ROLES)))
    for role in ROLES:
        np.testing.assert_allclose(got[role], expected[role], atol=BATCH_TOLERANCE)
    assert not any(isinstance(value, threading.local) for value in vars(baselines).values())


def test_encode_as_asks_encoders_with_roles_and_plain_encoders_alike():
    calls = []

    class Plain:  # any object with encode(items, ...): queries and documents alike
        def encode(self, items, **kwargs):
            calls.append(("encode", kwargs))
            return np.zeros((len(items), 2))

    class WithRoles(Plain):  # the sentence-transformers 5+ methods
        def encode_query(self, items, **kwargs):
            calls.append(("encode_query", kwargs))
            return np.ones((len(items), 2))

        def encode_document(self, items, **kwargs):
            calls.append(("encode_document", kwargs))
            return np.full((len(items), 2), 2.0)

    assert not isinstance(Plain(), QueryDocumentEncoder) and isinstance(WithRoles(), QueryDocumentEncoder)
    assert isinstance(MODELS["lame"](), QueryDocumentEncoder)
    assert encode_as(Plain(), ["a"], "document", batch_size=4).sum() == 0
    assert encode_as(WithRoles(), ["a"], "query", batch_size=4).sum() == 2
    assert encode_as(WithRoles(), ["a"], "document").sum() == 4
    assert calls == [("encode", {"batch_size": 4}), ("encode_query", {"batch_size": 4}), ("encode_document", {})]
    with pytest.raises(ValueError, match="role must be"):
        encode_as(Plain(), ["a"], "passage")


# ----------------------------------------------------------------------------- the autograd mode
def grad_modes(batch, kwargs) -> tuple[bool, bool]:
    return torch.is_inference_mode_enabled(), torch.is_grad_enabled()


def test_encode_runs_under_no_grad_inside_no_inference_mode_in_this_thread_only(monkeypatch):
    model = MODELS["lame"]().eval()
    seen = []
    record_forward(monkeypatch, model, seen, what=grad_modes)
    plain = model.encode(ITEMS)
    assert seen == [(True, False)]  # inference_mode by default
    seen.clear()
    with no_inference_mode():
        kept = model.encode(ITEMS)
        with ThreadPoolExecutor(1) as pool:  # another thread has its own context
            pool.submit(model.encode, ITEMS).result()
    model.encode(ITEMS)  # nothing left behind
    assert seen == [(False, False), (True, False), (True, False)]
    np.testing.assert_array_equal(kept, plain)
    assert "inference_context" not in vars(model) and not hasattr(model, "inference_context")


def test_zero3_evaluation_runs_encode_under_no_grad(tmp_path, monkeypatch):
    """The trainer evaluates inside its strategy's evaluation_context: under DeepSpeed ZeRO-3, weights
    gathered under inference_mode would become inference tensors the next backward cannot use."""
    from lame.training.evaluation import PeriodicEvaluation
    from lame.training.parallel import DataParallel, DeepSpeedZero
    from lame.training.run_log import Console, MetricsLog

    model = MODELS["lame"]().eval()
    seen = []
    record_forward(monkeypatch, model, seen, what=grad_modes)
    accelerator = SimpleNamespace(num_processes=1, is_main_process=True, wait_for_everyone=lambda: None)
    recipe = SimpleNamespace(train=SimpleNamespace(eval_every=1), eval=None)
    stage = SimpleNamespace(name="only")
    for zero_stage in (3, 2):
        config = tmp_path / f"zero{zero_stage}.json"
        config.write_text(json.dumps({"zero_optimization": {"stage": zero_stage}}))
        strategies = [DeepSpeedZero(accelerator, str(config)), DataParallel(accelerator)]
        for strategy in strategies:
            evaluation = PeriodicEvaluation(lambda m: {"x": float(m.encode(ITEMS[:1])[0, 0])}, recipe, accelerator,
                                            strategy, MetricsLog(tmp_path, True, False), Console(True, False))
            evaluation.after_step(model, stage, step=1, final=False)
    assert seen == [(False, False), (True, False), (True, False), (True, False)]  # ZeRO-3 only: no_grad
    assert model.training  # the trainer's model goes back to training mode
