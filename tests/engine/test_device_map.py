"""Models too big for one device load with ``device_map`` (accelerate): the traced numbers must not change.

On a CPU-only machine ``device_map="cpu"`` and ``"auto"`` both resolve to the CPU (transformers dispatches with
accelerate hooks only when the map spans several devices); the trace must equal a plain load's bit for bit. On a
GPU machine ``"auto"`` puts the model on the GPU(s), and the trace must agree within float32 tolerance.
"""

from __future__ import annotations

import pytest
import torch

import explorer

from bounds import attention_bound, model_bound

TEXT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(scope="module")
def plain_trace(smollm2) -> explorer.Trace:
    return smollm2.trace(TEXT)


@pytest.mark.parametrize("device_map", ["cpu", "auto"])
def test_device_map_load_traces_the_same(device_map, plain_trace, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen: dict = {}
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = explorer.load("smollm2", device="auto", device_map=device_map)
    assert seen.get("device_map") == device_map  # explorer.load handed the map to transformers/accelerate
    devices = {p.device.type for p in model.hf.parameters()}
    assert devices == {"cpu"} if not explorer.cuda_available() else devices <= {"cpu", "cuda"}
    trace = model.trace(TEXT)

    exact = devices == {"cpu"} and model.device.type == "cpu"
    assert trace.tokens == plain_trace.tokens and trace.token_ids == plain_trace.token_ids
    assert trace.n_layers == plain_trace.n_layers == 30
    for layer in (0, 17, 29):
        for head in (0, 4, 8):
            ours, ref = trace.attention(layer, head), plain_trace.attention(layer, head)
            if exact:
                assert torch.equal(ours, ref), (layer, head)
            else:  # another device sums in other orders (see bounds)
                assert (ours - ref).abs().max().item() <= attention_bound(plain_trace, layer), (layer, head)
    for ours, ref in zip(trace.hidden_states, plain_trace.hidden_states, strict=True):
        if exact:
            assert torch.equal(ours.cpu(), ref)
        else:
            assert (ours.float().cpu() - ref).abs().max().item() <= model_bound(model, float(ref.abs().max()))
    # The prediction agrees: the same greedy next token.
    assert int(trace.logits[-1].argmax()) == int(plain_trace.logits[-1].argmax())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_a_map_naming_cuda_without_cuda_is_a_clear_error():
    # transformers would fail deep inside with an AssertionError ("Torch not compiled with CUDA enabled")
    with pytest.raises(explorer.ExplorerError, match="CUDA"):
        explorer.load("smollm2", device_map="cuda:0")

