"""The server's AE_DTYPE and AE_DEVICE_MAP (issue 14, part 3): read without ever failing, handed to every load the
app makes, and part of the trace key, so that a bfloat16 and a float32 trace of one text never share a cache entry."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers.integrations.accelerate import check_and_set_device_map

import explorer
from explorer.ui import resources, state
from explorer.ui.settings import Settings

from apptest_helpers import APP, assert_clean, decode
from bounds import attention_bound

PAGE = "pages/heads.py"
TEXT = "The cat sat on the mat because it was tired."  # short: bf16 attention on CPU runs as exact maths

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


# ---- parsing ---------------------------------------------------------------------------------------------------
def test_unset_means_a_plain_float32_load():
    for env in ({}, {"AE_DTYPE": "", "AE_DEVICE_MAP": "   "}):
        s = Settings.from_env(env)
        assert (s.dtype, s.device_map) == ("float32", None), env


@pytest.mark.parametrize("raw, dtype", [("float32", "float32"), ("bfloat16", "bfloat16"), (" Float16\n", "float16")])
def test_each_dtype_of_explorer_load_is_taken(raw, dtype):
    assert Settings.from_env({"AE_DTYPE": raw}).dtype == dtype


@pytest.mark.parametrize("raw", ["float64", "bf16", "int8", "auto", "torch.bfloat16", "bfloat16; rm -rf /", "💥"])
def test_an_unknown_dtype_loads_float32_and_says_so(raw, caplog):
    with caplog.at_level(logging.WARNING, logger="attention_explorer"):
        assert Settings.from_env({"AE_DTYPE": raw}).dtype == "float32"
    assert "AE_DTYPE" in caplog.text


@pytest.mark.parametrize("raw", ["auto", "AUTO", "balanced", "balanced_low_0", "sequential", "cpu", "cuda",
                                 "cuda:1", " Cuda:0 ", "mps", "nonsense", "cuda:x", "0", "auto,cpu", "{}", "💥"])
def test_a_device_map_is_kept_exactly_when_transformers_accepts_it(raw, caplog):
    """The reference is transformers' own check of a string device map: what it refuses would fail every load, so the
    setting drops it (plain load, a line in the log); what it takes is passed on."""
    with caplog.at_level(logging.WARNING, logger="attention_explorer"):
        parsed = Settings.from_env({"AE_DEVICE_MAP": raw}).device_map
    try:
        check_and_set_device_map(raw.strip().lower())
        accepted = True
    except ValueError:
        accepted = False
    assert parsed == (raw.strip().lower() if accepted else None)
    assert ("AE_DEVICE_MAP" in caplog.text) == (not accepted)


# ---- the trace key ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_bf16() -> explorer.Model:
    return explorer.load("smollm2", device="cpu", dtype="bfloat16")


def test_float32_and_bf16_traces_of_one_text_are_two_cache_entries(smollm2, smollm2_bf16):
    text = "Two dtypes, one text."
    k32 = resources.make_trace_key("smollm2", smollm2.device, smollm2.dtype, text, None)
    k16 = resources.make_trace_key("smollm2", smollm2_bf16.device, smollm2_bf16.dtype, text, None)
    assert (k32.dtype, k16.dtype) == ("float32", "bfloat16") and k32._replace(dtype="bfloat16") == k16
    t32, t16 = resources.trace_for(smollm2, text, None), resources.trace_for(smollm2_bf16, text, None)
    assert t16 is not t32
    assert (t32.records[0].q.dtype, t16.records[0].q.dtype) == (torch.float32, torch.bfloat16)
    assert (t32.dtype, t16.dtype) == (torch.float32, torch.bfloat16)
    assert resources._trace_cache().get(k32) is t32 and resources._trace_cache().get(k16) is t16


# ---- the app ---------------------------------------------------------------------------------------------------
@pytest.fixture
def server_env(monkeypatch):
    """Set AE_* variables for the app (whose settings() and model cache are process-wide), and restore both after."""

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        state.settings.clear()
        resources._load_model.clear()  # the load under test must happen in the app, not come from an earlier test

    set_env()
    yield set_env
    monkeypatch.undo()
    state.settings.clear()


@pytest.fixture
def app_loads(monkeypatch) -> list[tuple[dict, explorer.Model]]:
    """Every explorer.load the app makes: its keyword arguments and the model it returned."""
    seen: list = []
    original = resources.load

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        seen.append((kwargs, model))
        return model

    monkeypatch.setattr(resources, "load", spy)
    return seen


def layer0_maps(at: AppTest) -> np.ndarray:
    """The heads page's default view: the maps of every head of layer 0, (H, n, n)."""
    (small,) = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return np.stack([decode(head["z"]) for head in small["data"]])


def open_home_then_heads(text: str) -> tuple[AppTest, str]:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["text"] = text
    at.run()
    assert_clean(at)
    home_captions = " ".join(c.value for c in at.caption)
    at.switch_page(PAGE).run()
    assert_clean(at)
    return at, home_captions


def test_ae_dtype_bfloat16_loads_traces_and_shows_bf16(server_env, app_loads, smollm2):
    fp32 = smollm2.trace(TEXT)
    # A float32 server first, so that its trace and page caches hold this text: the bf16 run must not reuse them.
    at, captions = open_home_then_heads(TEXT)
    assert "dtype:" not in captions
    np.testing.assert_allclose(layer0_maps(at), fp32.attentions(0).numpy(), atol=attention_bound(fp32, 0), rtol=0)

    server_env(AE_DTYPE="bfloat16")
    at, captions = open_home_then_heads(TEXT)
    assert "dtype: bfloat16" in captions
    (kwargs, model), = [(k, m) for k, m in app_loads if k["dtype"] == "bfloat16"]
    assert kwargs["device_map"] is None and next(model.hf.parameters()).dtype == torch.bfloat16
    key = resources.make_trace_key("smollm2", "cpu", "bfloat16", TEXT, None)
    bf16 = resources._trace_cache().get(key)
    assert bf16 is not None and bf16.records[0].q.dtype == torch.bfloat16  # what the model computed, in bf16
    own32 = resources._trace_cache().get(key._replace(dtype="float32"))  # the first run's, kept beside it
    assert own32 is not None and own32.records[0].q.dtype == torch.float32

    shown = torch.from_numpy(layer0_maps(at))  # (H, n, n)
    # The page draws this bf16 trace's maps (float32 softmax of its q, k): the same numbers, up to float32 rounding.
    assert (shown - bf16.attentions(0)).abs().max().item() <= attention_bound(bf16, 0)
    # ... which are not the float32 run's: they differ by more than float32 rounding could explain, and by no more
    # than the scores' bf16 rounding allows, |Δp| ≤ p·(exp(2·max_j|Δs_ij|) − 1) (tests/engine/test_dtype.py), plus
    # float32 slack.
    assert (shown - fp32.attentions(0)).abs().max().item() > attention_bound(fp32, 0)
    for head in range(fp32.n_heads):
        s32 = fp32.q(0, head) @ fp32.k(0, head).T * fp32.scale(0)  # (n, n)
        s16 = bf16.q(0, head) @ bf16.k(0, head).T * bf16.scale(0)  # (n, n)
        delta = (s16 - s32).tril().abs().amax(-1, keepdim=True)  # (n, 1)
        p32 = fp32.attention(0, head)
        assert bool(((shown[head] - p32).abs() <= p32 * torch.expm1(2 * delta) + 1e-6).all()), head


def test_ae_device_map_reaches_transformers_and_the_page_works(server_env, app_loads, smollm2, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    server_env(AE_DEVICE_MAP="cpu")
    at, _ = open_home_then_heads(TEXT)
    assert [k["device_map"] for k, _ in app_loads] == ["cpu"]
    assert [k.get("device_map") for k in seen] == ["cpu"]  # explorer.load handed it to transformers/accelerate
    # A single-device map is a plain load (tests/engine/test_device_map.py): the page shows the float32 maps.
    fp32 = smollm2.trace(TEXT)
    np.testing.assert_allclose(layer0_maps(at), fp32.attentions(0).numpy(), atol=attention_bound(fp32, 0), rtol=0)
