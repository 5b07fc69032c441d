"""From scratch: a textbook multi-head attention checked against the model, a tutorial's departures from it, and the
fused kernels that never build the n×n matrix."""

import inspect

import streamlit as st

from explorer.from_scratch import kernels, scratch
from explorer.ui import common as ui
from explorer.ui import scratch as us
from explorer.capture.devices import cuda_available
from explorer.escape import md_escape
from explorer.figures import scratch as fs
from explorer.figures.heatmap import token_heatmap
from explorer.from_scratch.checks import PARITY_TOLERANCE

ui.require_entrypoint()

TABS = ["Textbook vs the model", "The tutorial variant", "Kernels and devices"]
TUTORIAL_CODE = '''\
# (2) one small d_k × d_k matrix per projection, shared by every head
self.values  = nn.Linear(self.head_dim, self.head_dim, bias=False)
self.keys    = nn.Linear(self.head_dim, self.head_dim, bias=False)
self.queries = nn.Linear(self.head_dim, self.head_dim, bias=False)
...
energy = torch.einsum("nqhd,nkhd->nhqk", [queries, keys])
# (3) a large negative number instead of −∞
energy = energy.masked_fill(mask == 0, float("-1e20"))
# (1) √(embedding size) instead of √d_k
attention = torch.softmax(energy / (self.embed_size ** (1 / 2)), dim=3)'''


def textbook_tab(model, trace, layer: int) -> None:
    st.latex(r"\mathrm{head}_h = \mathrm{softmax}\!\left(\frac{(xW_Q^h)(xW_K^h)^\top}{\sqrt{d_k}} + M\right)"
             r"xW_V^h")
    st.latex(r"\mathrm{out} = [\mathrm{head}_1;\dots;\mathrm{head}_H]\,W_O")
    module = scratch.MultiHeadAttention.from_model(model, layer)
    rope = ("RoPE from scratch (rotate-half, the model's frequencies)" if isinstance(module.rope, scratch.Rotary)
            else "RoPE: the model's own function" if module.rope is not None else "no RoPE (positions are added to "
            "the embeddings before layer 0)")
    gqa = (f"{module.n_heads} query heads read {module.n_kv_heads} key/value heads (groups of {module.group_size})"
           if module.group_size > 1 else f"{module.n_heads} heads, each with its own keys and values")
    st.caption(f"`explorer/scratch.py` · `MultiHeadAttention` loaded with layer {layer}'s weights: d = "
               f"{module.d_model}, d_k = {module.head_dim}, {gqa}; {rope}. It runs in plain torch on "
               f"**{model.device}**, in float32, on this layer's input x from the trace, under the mask the trace "
               "ran with.")
    with st.expander("The code: `attention_core` and `MultiHeadAttention.forward`"):
        st.code("\n".join(inspect.getsource(f) for f in (scratch.attention_core, scratch.MultiHeadAttention.forward)),
                language="python")

    (parity,) = us.cached_parity(model, trace, [layer])
    st.subheader(f"Layer {layer}: the same numbers as the model")
    metrics = st.container(horizontal=True)  # wraps on narrow screens
    metrics.metric("Output max |Δ|", f"{parity.output:.1e}", width=170, help=f"Compared {parity.compared_at}.")
    metrics.metric("Relative to scale", f"{parity.output / parity.output_scale:.1e}", width=170,
                   help=f"max |Δ| ÷ max(1, max |value|) = ÷ {parity.output_scale:.3g}. float32 keeps 24 bits: a value "
                        "of 100 is only known to about ±1e-5, so large outputs are compared relative to their size.")
    metrics.metric("Attention max |Δ|", f"{parity.probs:.1e}", width=170, help="Against the trace's exact maps.")
    metrics.metric(f"Within {PARITY_TOLERANCE:.0e}", "yes ✓" if parity.passed() else "no ✗", width=170)
    module_name = type(model.attention_modules[layer]).__name__
    st.caption(f"Reference: the output of the model's own attention module (`{module_name}`), captured with a "
               f"forward hook during a second run of your text; compared {parity.compared_at}. "
               f"q/k/v{' after RoPE' if module.rope is not None else ''} differ from the trace's recorded ones by "
               f"at most {parity.qkv:.1e}.")
    if st.toggle("Check every layer", key="scratch_all_layers",
                 help="Loads each layer's weights in turn and compares it with the model (one more forward)."):
        parities = us.cached_parity(model, trace, list(range(trace.n_layers)))
        passed = sum(p.passed() for p in parities)
        st.plotly_chart(fs.parity_chart(parities), key="scratch_parity_chart")
        st.caption(f"**{passed} of {len(parities)}** layers agree within {PARITY_TOLERANCE:.0e}; the worst is "
                   f"{max(p.worst for p in parities):.1e}.")
        st.dataframe(us.parity_frame(parities), hide_index=True, height=240, column_config={
            c: st.column_config.NumberColumn(format="%.1e") for c in
            ("output max |Δ|", "attention max |Δ|", "q/k/v max |Δ|", "relative (worst)")})


def variant_tab(model, trace, layer: int, head: int) -> None:
    st.markdown("A much-copied *transformer from scratch* tutorial writes self-attention like this (excerpt). "
                "Three lines depart from the textbook; switch each on or off:")
    st.code(TUTORIAL_CODE, language="python")
    row = st.container(horizontal=True)
    departures = scratch.Departures(
        embed_scale=row.toggle("(1) ÷ √(embedding size)", value=True, key="scratch_dep_scale"),
        shared_projection=row.toggle("(2) one shared d_k × d_k projection", value=True, key="scratch_dep_shared"),
        large_negative_fill=row.toggle("(3) mask fill −1e20", value=True, key="scratch_dep_fill"),
    )
    view = us.cached_variant_view(model, trace, layer, head, departures)
    st.subheader(f"Layer {layer} on your text, textbook vs this variant")
    metrics = st.container(horizontal=True)
    metrics.metric("Output differs by", f"{view.output_relative_diff:.1%}", width=200,
                   help="‖out_variant − out‖ ÷ ‖out‖")
    metrics.metric("Mean entropy (nats)", f"{view.entropy_variant.mean():.3f}", width=200,
                   delta=f"{view.entropy_variant.mean() - view.entropy_textbook.mean():+.3f} vs textbook",
                   delta_color="off")
    metrics.metric("Head diversity", f"{view.diversity_variant:.3f}", width=200,
                   delta=f"{view.diversity_variant - view.diversity_textbook:+.3f} vs textbook", delta_color="off",
                   help="Total-variation distance between two heads' attention rows, averaged over queries and pairs "
                        "of heads: 0 = all heads attend alike, 1 = never to the same keys.")
    if departures.shared_projection:
        st.caption("With (2) on, the variant cannot hold the real weights. It gets the shared projection that best "
                   "fits this layer (least squares) on a fixed calibration paragraph, and is measured here on your "
                   "text: the closest the tutorial's layer can come.")
    uniform = float(trace.allowed(layer).sum(-1).double().log().mean())  # entropy of uniform attention
    st.plotly_chart(fs.entropy_chart(view.entropy_textbook, view.entropy_variant, uniform),
                    key="scratch_entropy_chart")
    maps = st.container(horizontal=True)  # side by side where they fit, stacked where not
    for matrix, name in ((view.map_textbook, "textbook"), (view.map_variant, "variant")):
        maps.plotly_chart(token_heatmap(matrix, trace.tokens, trace.tokens, zmin=0.0, zmax=1.0, showscale=False,
                                       title=f"Head {head}, {name}", height=420), key=f"scratch_map_{name}",
                          width=480)

    st.subheader("Each departure on its own")
    rises = view.entropy_embed_scale - view.entropy_textbook
    st.markdown(f"**(1) ÷ √(embedding size).** The scores are multiplied by 1/√{model.config.hidden_size} = "
                f"{view.scale_variant:.4f} instead of 1/√{trace.head_dim} = {view.scale_textbook:.4f}: "
                f"{view.scale_textbook / view.scale_variant:.2f}× smaller, so every softmax is flatter (a higher "
                f"temperature; a row's entropy can only rise as its scores shrink). On your text the mean entropy "
                f"rises in **{int((rises > 0).sum())} of {len(rises)}** heads, by {rises.mean():.3f} nats on average:")
    st.dataframe({"head": list(range(len(rises))), "textbook (nats)": view.entropy_textbook,
                  "÷ √(embedding size)": view.entropy_embed_scale, "rise": rises},
                 hide_index=True, height=38 + 35 * len(rises), width=560, column_config={
                     c: st.column_config.NumberColumn(format="%.3f")
                     for c in ("textbook (nats)", "÷ √(embedding size)", "rise")})
    st.markdown("**(2) One shared d_k × d_k projection.** The tutorial cuts x into H slices of d_k features and maps "
                "every slice with the *same* matrix, so head h only ever reads features h·d_k … h·d_k + d_k − 1, "
                "all heads apply one function, and none can pick what to look at from the whole embedding.")
    if view.counts is None:
        st.info(f"Not applicable to this model: {md_escape(view.shared_error)}")
    else:
        c = view.counts
        st.dataframe({"parameters": ["W_Q, W_K, W_V", "W_O (kept full)", "total"],
                      "textbook (this layer)": [c.qkv_textbook, c.output, c.textbook],
                      "tutorial": [c.qkv_tutorial, c.output, c.tutorial]}, hide_index=True, width=560)
        st.caption(f"The shared version keeps {c.qkv_tutorial / c.qkv_textbook:.1%} of the Q/K/V parameters. The best "
                   f"shared fit explains R² = {view.shared_r2['q']:.2f} (Q), {view.shared_r2['k']:.2f} (K), "
                   f"{view.shared_r2['v']:.2f} (V) of the real heads' projections of your text (fitted on another "
                   f"text); 1 would mean every head's matrix was the same one applied to its slice. With it, head "
                   f"diversity is {view.diversity_shared:.3f} (textbook {view.diversity_textbook:.3f}).")
    st.markdown("**(3) Masked scores set to −1e20 instead of −∞.** After a float32 softmax both give exactly 0: "
                "e^(−1e20 − max) underflows. In float16 (what `.half()` or autocast runs) −1e20 and −1e9 cannot be "
                "represented and `masked_fill` raises; the safe finite choice is the dtype's lowest value. Where they "
                "do differ is a query that may see *no* key (a padding row): −∞ gives NaN, a finite fill a uniform "
                "row.")
    st.dataframe(us.fills_frame(view.fills))
    st.caption("Each cell: the largest |Δ| of the attention probabilities of this layer on your text against −∞ in the "
               "same dtype, and what a fully masked row becomes.")


def kernels_tab(model) -> None:
    st.markdown(
        "The textbook computes the whole score matrix QKᵀ: **H × n × n** numbers, then a softmax over each row, then "
        "multiplies by V. Fused kernels (FlashAttention, memory-efficient attention, and PyTorch's CPU flash kernel) "
        "never build it. They load a tile of keys at a time and keep, for each query, only a running maximum m, a "
        "running sum ℓ of exponentials and a running output o, rescaling them when a new tile raises the maximum "
        "(the *online softmax*):")
    st.latex(r"m' = \max(m, \max_j s_{ij}),\qquad \ell' = \ell\,e^{m-m'} + \sum_j e^{s_{ij}-m'}")
    st.latex(r"o' = o\,e^{m-m'} + \sum_j e^{s_{ij}-m'} v_j,\qquad \mathrm{out}_i = o_i/\ell_i")
    st.markdown("The result is exactly softmax(QKᵀ/√d_k + M)V, with O(n·d_k) memory instead of O(n²), and far fewer "
                "trips to memory. At the end, m + ln ℓ is each row's log-sum-exp: the engine's recorder keeps it, so "
                "any head's map can be rebuilt later without ever being stored.")
    shape = kernels.Shape.of_model(model)
    on_cpu = model.device.type == "cpu"
    row = st.container(horizontal=True, vertical_alignment="bottom")
    max_n = row.select_slider("Longest n", kernels.LENGTHS, value=1024 if on_cpu else 4096, key="scratch_max_n",
                              width=300,
                              help="On the CPU, n = 4,096 takes a while: the from-scratch path builds "
                                   f"{shape.n_heads} × 4096² floats ≈ {shape.n_heads * 4096**2 * 4 / 2**30:.1f} GiB "
                                   "twice.")
    repeats = row.number_input("Repeats (median)", 1, 20, 3, key="scratch_repeats", width=160)
    memory = row.checkbox("Measure memory", value=True, key="scratch_memory",
                          help="CUDA: the allocator's peak. CPU: torch's profiler, from every allocation and free.")
    key = us.sweep_key(model, int(max_n), int(repeats), bool(memory))
    run = row.button("Time the kernels", type="primary", key="scratch_run_sweep", icon=":material/timer:")
    st.caption(f"Shape: {shape.n_heads} heads × d_k = {shape.head_dim}, {'causal' if shape.causal else 'no'} mask, "
               f"float32, seeded random inputs, on **{model.device}**. `benchmarks/bench_kernels.py` prints the same "
               "comparison as ratios.")
    result = us.run_sweep(model, key) if run else us.stored_sweep(key)
    if result is None:
        st.info("Press **Time the kernels** to run the sweep (kept for this session).")
    else:
        rows, missing = result
        st.markdown("**Median time, ms** (× SDPA's default dispatch)")
        st.dataframe(us.sweep_pivot(rows, "time"), height="auto")
        if any(r.peak_bytes is not None for r in rows):
            st.markdown("**Peak memory, MiB** above the inputs")
            st.dataframe(us.sweep_pivot(rows, "memory"), height="auto")
        with st.expander("Every number (and the agreement with the from-scratch output)"):
            st.dataframe(us.sweep_frame(rows), hide_index=True, column_config={
                "median ms": st.column_config.NumberColumn(format="%.3f"),
                "× SDPA": st.column_config.NumberColumn(format="%.2f×"),
                "peak MiB": st.column_config.NumberColumn(format="%.2f"),
                "max |Δ| vs scratch": st.column_config.NumberColumn(format="%.1e")})
        charts = st.container(horizontal=True)  # side by side where they fit, stacked where not
        charts.plotly_chart(fs.sweep_chart(rows, "seconds"), key="scratch_time_chart", width=480)
        if any(r.peak_bytes is not None for r in rows):
            charts.plotly_chart(fs.sweep_chart(rows, "peak_bytes"), key="scratch_memory_chart", width=480)
        st.caption("Dashed lines build the n×n matrix (from scratch, SDPA's math back end); their memory grows as n². "
                   "Peak memory counts everything a call allocates beyond its inputs, output included.")
        for gone in missing:
            st.caption(f"Not available here: **{gone.method}** ({gone.reason})")

    st.subheader("CPU and CUDA")
    if cuda_available():
        if st.button("Compare CPU and CUDA outputs", key="scratch_devices"):
            agreement = kernels.device_agreement(256, shape)
            st.dataframe({"method": list(agreement), "max |Δ| CPU vs CUDA (float32)": list(agreement.values())},
                         hide_index=True)
    else:
        st.info("No GPU is visible to this server, so the CPU↔CUDA agreement is not measured here (its test skips "
                "with that reason). On a GPU machine this section compares every method's float32 output on both "
                "devices from identical inputs.")


st.title("Attention from scratch")
with ui.guard():
    model = ui.current_model()
    trace = ui.current_trace()
    layer, head = ui.layer_head_selectors(trace, key="scratch", container=st.container(horizontal=True, width=480))
    tabs = st.tabs(TABS, key="scratch_tab", on_change="rerun")  # only the open tab runs
    with tabs[0]:
        if tabs[0].open:
            textbook_tab(model, trace, layer)
    with tabs[1]:
        if tabs[1].open:
            variant_tab(model, trace, layer, head)
    with tabs[2]:
        if tabs[2].open:
            kernels_tab(model)
