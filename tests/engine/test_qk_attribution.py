"""QK attribution against stock eager transformers models: the real score from plain hooks (q_proj/k_proj, the
stock QK-norm and rotary embedding), the parts summing to it, and one head's key-side part rebuilt by hand from the
HF weights and the hooked activations (frozen norms written out in the test)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import explorer
from explorer import ExplorerError

from bounds import EPS32, model_bound
from tiny_tokenizer import word_tokenizer

pytestmark = pytest.mark.numeric

TEXT = "The cat sat on the mat. The cat sat on the"
TINY_TEXT = " ".join(f"w{i}" for i in (5, 17, 99, 23, 5, 17, 64, 8, 120, 33, 5))


class Hooks:
    """Plain forward (pre-)hooks on a stock model: what each named module saw (input) or gave (output)."""

    def __init__(self):
        self.seen, self.handles = {}, []

    def inp(self, name, module, kwargs=False):
        def pre(mod, args, kw):
            self.seen[name] = (args[0] if args else kw["hidden_states"]).detach()[0]
            if "position_embeddings" in kw:
                self.seen[name + ".rope"] = kw["position_embeddings"]
        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def out(self, name, module):
        self.handles.append(module.register_forward_hook(lambda m, a, o: self.seen.__setitem__(name, o.detach()[0])))

    def remove(self):
        for h in self.handles:
            h.remove()

    def run(self, model, *args, **kwargs):
        """``model(*args, **kwargs)`` once with the hooks on; they come off afterwards, whatever happens."""
        try:
            return model(*args, **kwargs)
        finally:
            self.remove()


def _rms(x, eps):
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _centred_scale(x, eps):
    return torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)


@torch.inference_mode()
def llama_reference(eager, ids, L, h, query, key, part):
    """(real score, real scores of the query over every key, the key-side value of head ``part`` = (l, h')) for a
    Llama-family stock model (SmolLM2, Gemma 3, tiny Llama)."""
    base, cfg = eager.model, eager.config
    gemma = hasattr(base.layers[0], "pre_feedforward_layernorm")
    attn = base.layers[L].self_attn
    l, hp = part
    hooks = Hooks()
    hooks.inp("attn", attn, kwargs=True)
    hooks.out("q", attn.q_proj)
    hooks.out("k", attn.k_proj)
    hooks.inp("z", base.layers[l].self_attn.o_proj)
    if gemma:
        hooks.inp("post", base.layers[l].post_attention_layernorm)
    out = hooks.run(eager, ids, output_hidden_states=True)
    s = hooks.seen
    D, H, Hkv = attn.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    kv = h // (H // Hkv)
    n = ids.shape[1]
    q = s["q"].view(n, H, D).transpose(0, 1)  # (H, n, D)
    k = s["k"].view(n, Hkv, D).transpose(0, 1)
    if gemma:
        q_scale_real = _rms(q, attn.q_norm.eps)  # frozen QK-norm scales of the real q and k
        k_scale_real = _rms(k, attn.k_norm.eps)
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = s["attn.rope"]
    apply = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    q, k = apply(q[None], k[None], cos, sin)
    q, k = q[0], k[0]
    scores = (k[kv] @ q[h, query]) * attn.scaling  # (n,) every key
    # Head (l, hp)'s key-side part by hand: W_o^h' z, Gemma's frozen post-attention norm, the frozen input norm of
    # layer L, W_k of the key head, the frozen QK-norm, RoPE at the key, dotted with the real q.
    z = s["z"][key, hp * D:(hp + 1) * D]
    y = base.layers[l].self_attn.o_proj.weight[:, hp * D:(hp + 1) * D] @ z
    if gemma:
        post = base.layers[l].post_attention_layernorm
        y = y * _rms(s["post"][key], post.eps) * (1 + post.weight)
    norm = base.layers[L].input_layernorm
    hidden = out.hidden_states[L][0, key]
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    y = y * _rms(hidden, eps) * ((1 + norm.weight) if gemma else norm.weight)
    kp = attn.k_proj.weight[kv * D:(kv + 1) * D] @ y  # (D,)
    if gemma:
        kp = kp * k_scale_real[kv, key] * (1 + attn.k_norm.weight)
    kp = apply(kp[None, None, None], kp[None, None, None], cos[:, key:key + 1], sin[:, key:key + 1])[1][0, 0, 0]
    return float(scores[key]), scores, float(q[h, query] @ kp) * attn.scaling, float(q[h, query].norm() * kp.norm())


@torch.inference_mode()
def bert_reference(eager, ids, L, h, query, key, part):
    """The same for a BERT encoder; the hand part is head (L−1, h') carried through its layer's two LayerNorms."""
    layers = eager.encoder.layer
    sa = layers[L].attention.self
    l, hp = part
    assert l == L - 1
    hooks = Hooks()
    hooks.out("q", sa.query)
    hooks.out("k", sa.key)
    hooks.inp("z", layers[l].attention.output.dense)
    hooks.inp("x1", layers[l].attention.output.LayerNorm)
    hooks.inp("x2", layers[l].output.LayerNorm)
    hooks.run(eager, ids)
    s = hooks.seen
    H = eager.config.num_attention_heads
    D = eager.config.hidden_size // H
    n = ids.shape[1]
    q = s["q"].view(n, H, D)[query, h]
    k = s["k"].view(n, H, D)[:, h]  # (n, D)
    scale = D ** -0.5
    scores = (k @ q) * scale
    ln1, ln2 = layers[l].attention.output.LayerNorm, layers[l].output.LayerNorm
    y = layers[l].attention.output.dense.weight[:, hp * D:(hp + 1) * D] @ s["z"][key, hp * D:(hp + 1) * D]
    y = (y - y.mean()) * _centred_scale(s["x1"][key], ln1.eps) * ln1.weight
    y = (y - y.mean()) * _centred_scale(s["x2"][key], ln2.eps) * ln2.weight
    kp = sa.key.weight[h * D:(h + 1) * D] @ y
    return float(scores[key]), scores, float(q @ kp) * scale, float(q.norm() * kp.norm())


@torch.inference_mode()
def gpt2_reference(eager, ids, L, h, query, key, part):
    """The same for GPT-2 (fused c_attn, Conv1D weights stored (in, out)); the hand part is head (l, h') through
    layer L's frozen ln_1."""
    blocks = eager.transformer.h
    d = eager.config.n_embd
    H = eager.config.n_head
    D = d // H
    l, hp = part
    hooks = Hooks()
    hooks.out("qkv", blocks[L].attn.c_attn)
    hooks.inp("z", blocks[l].attn.c_proj)
    hooks.inp("ln", blocks[L].ln_1)
    hooks.run(eager, ids)
    s = hooks.seen
    n = ids.shape[1]
    q = s["qkv"][:, :d].view(n, H, D)[query, h]
    k = s["qkv"][:, d:2 * d].view(n, H, D)[:, h]
    scale = D ** -0.5
    scores = (k @ q) * scale
    ln = blocks[L].ln_1
    y = blocks[l].attn.c_proj.weight[hp * D:(hp + 1) * D].T @ s["z"][key, hp * D:(hp + 1) * D]
    y = (y - y.mean()) * _centred_scale(s["ln"][key], ln.eps) * ln.weight
    kp = blocks[L].attn.c_attn.weight[:, d + h * D:d + (h + 1) * D].T @ y
    return float(scores[key]), scores, float(q @ kp) * scale, float(q.norm() * kp.norm())


def check(model, eager, reference, text, L, h, query, key, part):
    trace = model.trace(text)
    ids = torch.tensor([trace.token_ids])
    real, scores, part_value, part_size = reference(eager, ids, L, h, query, key, part)
    allowed = trace.allowed_rows(L, slice(query, query + 1))[0]
    for baseline in (None, "mean"):
        r = explorer.qk_attribution(trace, L, h, query, key, baseline=baseline)
        want = real if baseline is None else real - float(scores[allowed].mean())
        size = float(r.pairs.abs().to_numpy().sum())  # the terms the split adds up
        bound = model_bound(model, size)
        assert abs(r.score - want) <= bound
        assert abs(r.parts_total - want) <= bound
        assert abs(float(r.query_parts.sum()) - r.parts_total) <= 4 * EPS32 * size
        assert abs(float(r.key_parts.sum()) - r.parts_total) <= 4 * EPS32 * size
        assert np.allclose(r.pairs.sum(axis=0), r.key_parts) and np.allclose(r.pairs.sum(axis=1), r.query_parts)
        if baseline is None:
            name = f"{part[0]}.{part[1]}"
            assert abs(float(r.key_parts[name]) - part_value) <= model_bound(model, part_size), name
            assert abs(part_value) > 10 * model_bound(model, part_size)  # a part that is really there
    return r


# ---- the embedded models ---------------------------------------------------------------------------------------

def test_smollm2_induction_head(smollm2, smollm2_eager):
    # 18.6 (the strongest induction head), the last " the" looking at " mat"'s predecessor; 16.0 is a
    # previous-token head feeding it.
    trace = smollm2.trace(TEXT)
    query = trace.n_tokens - 1
    key = int(trace.top_keys(18, 6, query, k=1)[0][0])
    check(smollm2, smollm2_eager, llama_reference, TEXT, 18, 6, query, key, (16, 0))


def test_smollm2_early_layer_and_gqa_head(smollm2, smollm2_eager):
    check(smollm2, smollm2_eager, llama_reference, TEXT, 3, 5, 8, 2, (1, 2))


def test_minilm_post_norm(minilm, minilm_eager):
    r = check(minilm, minilm_eager, bert_reference, TEXT, 4, 7, 5, 2, (3, 1))
    assert "bias" in r.key_parts.index  # LayerNorm's β and the projections' biases


def test_gemma3_qk_norm_and_sandwich_norms(gemma3, gemma3_eager):
    check(gemma3, gemma3_eager, llama_reference, TEXT, 5, 1, 9, 3, (4, 2))


# ---- tiny random configs ---------------------------------------------------------------------------------------

VOCAB = 128
TINY = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=3, n_head=4),
             gpt2_reference),
    "bert": (BertModel, BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64), bert_reference),
    "llama": (LlamaForCausalLM, LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=64), llama_reference),
}


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request, tmp_path_factory):
    cls, config, reference = TINY[request.param]
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qk_" + request.param)
    model = cls(config).eval()
    with torch.no_grad():  # random biases, so that the "bias" part is really exercised
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    model.config.architectures = [cls.__name__]
    model.save_pretrained(folder)
    word_tokenizer(folder, VOCAB)
    eager = cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    return request.param, explorer.load(str(folder), device="cpu"), eager, reference


def test_tiny_configs(tiny):
    name, model, eager, reference = tiny
    r = check(model, eager, reference, TINY_TEXT, 2, 1, 9, 4, (1, 3))
    assert ("bias" in r.key_parts.index) == (name != "llama")


def test_bad_input(tiny):
    name, model, _, _ = tiny
    trace = model.trace(TINY_TEXT)
    n = trace.n_tokens
    with pytest.raises(ExplorerError, match="out of range"):
        explorer.qk_attribution(trace, 3, 0, 1, 0)
    with pytest.raises(ExplorerError, match="position"):
        explorer.qk_attribution(trace, 1, 0, n, 0)
    with pytest.raises(ExplorerError, match="position"):
        explorer.qk_attribution(trace, 1, 0, 2, -1)
    with pytest.raises(ExplorerError, match="baseline"):
        explorer.qk_attribution(trace, 1, 0, 2, 1, baseline="median")
    if name != "bert":
        with pytest.raises(ExplorerError, match="hides key"):
            explorer.qk_attribution(trace, 1, 0, 2, 3)
    ablated = model.trace(TINY_TEXT, ablate=[(0, 1)])
    with pytest.raises(ExplorerError, match="switched off"):
        explorer.qk_attribution(ablated, 1, 0, 2, 1)
