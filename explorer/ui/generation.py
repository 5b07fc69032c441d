"""Streamlit parts of the Generation page: prompt and knobs, the stepper's buttons, the views, GPT vs BERT.

One function per section of the page; widget readers (``*_ui``) return small frozen parameter sets, kept apart from
the drawing. ``SECTIONS`` lists what the page draws for a stepper, in order.

The stepper (it holds a KV cache) lives in ``st.session_state``: one per user. The model stays shared through
:func:`explorer.ui.resources.current_model`. Buttons act through callbacks, which run before the script, so everything
drawn below them already shows the new state; a callback's error is kept in the session and shown by the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import streamlit as st

from . import resources, state, widgets
from ..errors import ExplorerError
from ..escape import md_escape
from ..figures import generation as fig
from ..decoding.fill_mask import MASKED_LM_EXAMPLES, PLACEHOLDER, fill_mask, no_masked_lm_message
from ..decoding.generation import Step, Stepper, not_causal_message, prompt_limit
from ..capture.model import Model
from ..i18n import N_, _, join, ngettext, number

log = logging.getLogger("attention_explorer")

STEPPER = "_gen_stepper"
STEPPER_KEY = "_gen_stepper_key"
ERROR = "_gen_error"
FILLED = "_gen_filled"
DEFAULT_PROMPT = "The capital of France is"
DEFAULT_MASKED = f"The capital of France is {PLACEHOLDER}."
N_CANDIDATES = 12
def probability() -> dict:
    """The probability column: three significant digits (small ones stay readable), its name in the reader's language."""
    return {"probability": st.column_config.NumberColumn(_("probability"), format="%.3g")}
FORMULAS = {
    "temperature": r"p_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}",
    "top-k": r"p^{(k)}_i \propto p_i \, [\, i \in \mathrm{top}\text{-}k \,]",
    "top-p": r"p'_i \propto p^{(k)}_i \, [\, i \in V_p \,]",
    "nucleus": r"\textstyle\sum_{i \in V_p} p^{(k)}_i \ge p",
}
# How a step chose its token (the engine's Step.how), as the reader reads it.
HOW = {"sampled": N_("sampled"), "greedy": N_("greedy"), "picked": N_("picked")}
COLOUR_BY = (N_("sampling probability"), N_("model probability (T = 1)"))
ATTENTION_VIEWS = (N_("one head"), N_("all heads of the layer"))


@dataclass(frozen=True)
class Inputs:
    prompt: str
    chat: bool
    temperature: float
    top_k: int
    top_p: float
    seed: int


# ---- prompt and knobs ------------------------------------------------------------------------------------------
def knobs_ui() -> Inputs:
    """The prompt field and the three knobs, each with its formula (cards that wrap on narrow screens)."""
    st.text_area(_("Prompt"), value=DEFAULT_PROMPT, key="gen_prompt", height=80, max_chars=state.MAX_TEXT_CHARS,
                 persist_state="session", help=_("Tokenised like the other pages. Changing it restarts generation."))
    st.checkbox(_("Chat template"), value=False, key="gen_chat", persist_state="session",
                help=_("Wrap the prompt as a user turn with the tokenizer's chat template (for instruct models such "
                       "as the embedded SmolLM2-Instruct) and let the model write the assistant's reply."))
    with st.container(horizontal=True, gap="medium"):
        with st.container(width=250):
            st.slider(_("Temperature T"), 0.0, 3.0, 0.8, 0.05, key="gen_temperature", persist_state="session",
                      help=_("0 = greedy (always the most probable token). Below 1 sharpens, above 1 flattens."))
            st.latex(FORMULAS["temperature"])
        with st.container(width=250):
            st.number_input("top-k", 0, 100_000, 50, 1, key="gen_top_k", persist_state="session",
                            help=_("Keep only the k most probable tokens. 0 = off."))
            st.latex(FORMULAS["top-k"])
        with st.container(width=250):
            st.slider(_("top-p (nucleus)"), 0.0, 1.0, 0.9, 0.01, key="gen_top_p", persist_state="session",
                      help=_("Keep the smallest set of most probable tokens whose mass reaches p. 1 = off."))
            st.latex(FORMULAS["top-p"])
            st.markdown(_("where $V_p$ is the smallest set of most probable tokens with"))  # LaTeX only in formulas
            st.latex(FORMULAS["nucleus"])
        with st.container(width=110):
            st.number_input(_("Seed"), 0, 2**31 - 1, 0, 1, key="gen_seed", persist_state="session",
                            help=_("The same seed, prompt and knobs give the same tokens."))
    st.caption(_("Order, as in transformers' logits processors: temperature, then top-k, then top-p; the kept tokens "
                 "are renormalised and the next token is drawn from them."))
    return _inputs_from_state()


def _inputs_from_state() -> Inputs:
    s = st.session_state
    return Inputs(
        prompt=s.get("gen_prompt", DEFAULT_PROMPT), chat=bool(s.get("gen_chat", False)),
        temperature=float(s.get("gen_temperature", 0.8)), top_k=int(s.get("gen_top_k", 50)),
        top_p=float(s.get("gen_top_p", 0.9)), seed=int(s.get("gen_seed", 0)),
    )


# ---- the per-user stepper --------------------------------------------------------------------------------------
def _stepper_key(model: Model, inputs: Inputs) -> tuple:
    """What this user's stepper was made for: (model, prompt, chat, caps); :func:`_act` reads prompt and chat at [1:3]."""
    s = state.settings()
    return (model.fingerprint, inputs.prompt, inputs.chat, s.max_tokens, s.max_generation_steps)


def current_stepper(model: Model, inputs: Inputs) -> Stepper:
    """This user's stepper for the model and prompt (restarted when either changes), with the current knobs."""
    key = _stepper_key(model, inputs)
    stepper: Stepper | None = st.session_state.get(STEPPER)
    if stepper is None or st.session_state.get(STEPPER_KEY) != key:
        st.session_state.pop(STEPPER, None)
        s = state.settings()
        with widgets.progress(_("Reading the prompt…")) as update:
            stepper = Stepper(model, inputs.prompt, chat=inputs.chat, seed=inputs.seed,
                              max_new_tokens=s.max_generation_steps,
                              max_tokens=prompt_limit(model, s.max_generation_steps, s.max_tokens),
                              temperature=inputs.temperature, top_k=inputs.top_k, top_p=inputs.top_p,
                              on_progress=update)
        st.session_state[STEPPER] = stepper
        st.session_state[STEPPER_KEY] = key
    _apply_knobs(stepper, inputs)
    return stepper


def _apply_knobs(stepper: Stepper, inputs: Inputs) -> None:
    stepper.set_knobs(inputs.temperature, inputs.top_k, inputs.top_p)
    stepper.seed = inputs.seed


def _act(action: str, choice_key: str | None = None) -> None:
    """Button callback: apply the widgets' knobs, then do ``action`` on this user's stepper."""
    stepper: Stepper | None = st.session_state.get(STEPPER)
    if stepper is None:
        return
    inputs = _inputs_from_state()
    if (inputs.prompt, inputs.chat) != st.session_state.get(STEPPER_KEY, (None,) * 3)[1:3]:  # see _stepper_key
        return  # the prompt changed in the same interaction: the page restarts generation instead
    try:
        _apply_knobs(stepper, inputs)
        if action == "sample":
            stepper.step()
        elif action == "greedy":
            stepper.step(greedy=True)
        elif action == "pick":
            stepper.choose(int(st.session_state[choice_key]))
        elif action == "back":
            stepper.back()
        elif action == "reset":
            stepper.reset()
    except ExplorerError as exc:
        st.session_state[ERROR] = str(exc)
    except Exception as exc:  # noqa: BLE001 - like widgets.guard: a short message for the user, the traceback in the log
        log.exception("generation action failed")
        st.session_state[ERROR] = _("Something went wrong ({error}). Try back or reset.").format(
            error=type(exc).__name__)


@dataclass(frozen=True)
class AutoRun:
    steps: int | None  # how many tokens to sample in a row now; None when Auto-run was not pressed


def controls_ui(stepper: Stepper) -> AutoRun:
    """Sample, greedy, back, reset (they act through callbacks) and the auto-run's number of steps and button."""
    error = st.session_state.pop(ERROR, None)
    if error:
        st.error(md_escape(error), icon="⚠️")
    cap = state.settings().max_generation_steps
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.button(_("Sample"), key="gen_sample", type="primary", on_click=_act, args=("sample",),
                  disabled=stepper.done, help=_("Draw the next token from the final distribution (seeded)."))
        st.button(_("Greedy"), key="gen_greedy", on_click=_act, args=("greedy",), disabled=stepper.done,
                  help=_("Take the most probable token (T = 0)."))
        st.button(_("Back"), key="gen_back", on_click=_act, args=("back",), disabled=not stepper.steps,
                  help=_("Undo the last token."))
        st.button(_("Reset"), key="gen_reset", on_click=_act, args=("reset",), disabled=not stepper.steps,
                  help=_("Back to the prompt alone."))
        with st.container(horizontal=True, vertical_alignment="bottom", width="content", gap="small"):
            st.number_input(_("Steps"), 1, cap, min(8, cap), 1, key="gen_auto_n", persist_state="session", width=130)
            run = st.button(_("Auto-run"), key="gen_auto", disabled=stepper.done,
                            help=_("Sample that many tokens in a row."))
    return AutoRun(int(st.session_state["gen_auto_n"]) if run else None)


def auto_run(stepper: Stepper, n: int) -> None:
    """Sample ``n`` tokens in a row (fewer if the text ends), with a progress bar."""
    bar = st.progress(0.0, text=ngettext("Sampling {n} token…", "Sampling {n} tokens…", n).format(n=n))
    for i in range(n):
        if stepper.done:
            break
        stepper.step()
        bar.progress((i + 1) / n, text=_("Sampled {i} of {n}: {token}").format(
            i=i + 1, n=n, token=md_escape(fig.candidate_label(stepper.steps[-1].token))))
    bar.empty()


def stepper_section(model: Model) -> Stepper | None:
    """The prompt, the knobs and this user's stepper; None (with a message) for a model that cannot generate."""
    if not model.is_causal_lm:
        st.info(md_escape(not_causal_message(model)))
        return None
    stepper = current_stepper(model, knobs_ui())
    kept = len(stepper.prompt.token_ids)
    if stepper.prompt.truncated_from and kept < state.settings().max_tokens:  # cut to leave room in the context
        st.info(_("The prompt has {n} tokens; generation continues from the first {kept}, which leaves room for "
                  "{steps} new tokens in the model's context of {context}.").format(
            n=number(stepper.prompt.truncated_from), kept=number(kept), steps=state.settings().max_generation_steps,
            context=number(model.max_positions)))
    elif stepper.prompt.truncated_from:
        st.info(_("The prompt has {n} tokens; generation continues from the first {kept} (the app's cap, "
                  "AE_MAX_TOKENS).").format(n=f"{stepper.prompt.truncated_from:,}", kept=f"{kept:,}"))
    return stepper


def controls_section(stepper: Stepper) -> None:
    run = controls_ui(stepper)
    if run.steps:
        auto_run(stepper, run.steps)


# ---- views -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextView:
    by_model: bool  # colour by the model's own probability (T = 1) rather than the sampling one


def text_ui() -> TextView:
    by = st.radio(_("Colour tokens by"), COLOUR_BY, horizontal=True, format_func=_, key="gen_colour_by",
                  persist_state="session",
                  help=_("Sampling probability: in the distribution the token was drawn from (after T, top-k, top-p). "
                         "Model probability: the model's own softmax, before any knob."))
    return TextView(by_model=by == COLOUR_BY[1])


def text_section(stepper: Stepper) -> None:
    """The prompt and the generated tokens, each coloured by its probability when it was chosen."""
    st.subheader(_("The text so far"))
    view = text_ui()
    probs = [s.p_model if view.by_model else s.p_chosen for s in stepper.steps]
    notes = [_("step {i} · {how} · p = {p} (model: {p_model})").format(
        i=s.index + 1, how=_(HOW[s.how]), p=f"{s.p_chosen:.3f}", p_model=f"{s.p_model:.3f}") for s in stepper.steps]
    st.html(fig.coloured_text_html(stepper.prompt.text, [s.token for s in stepper.steps], probs, notes))
    st.html(fig.colour_legend_html())
    cap = state.settings().max_generation_steps
    status = _("{n} of at most {cap} new tokens · seed {seed}").format(n=len(stepper.steps), cap=cap, seed=stepper.seed)
    if stepper.done:
        status += " · " + stepper.stop_message  # the engine's words, one place for the app and the errors
    st.caption(status)


def step_section(stepper: Stepper) -> None:
    """The pending step's candidates at each stage, and the control to pick one of them."""
    step = stepper.pending
    if step is None and not stepper.steps:  # nothing to show: e.g. a prompt that fills the model's context
        st.info(md_escape(stepper.stop_message))
        return
    if step is None:
        last = stepper.steps[-1]
        st.markdown(_("**Step {i}** (the last): chose {token} ({how}).").format(
            i=last.index + 1, token=md_escape(fig.candidate_label(last.token)), how=_(HOW[last.how])))
        _draw_stages(stepper, last, chosen=last.token_id)
        return
    st.markdown(_("**Step {i}**: the distribution over the next token, stage by stage").format(i=step.index + 1))
    ids = _draw_stages(stepper, step, chosen=None)
    probs = step.probs
    # Keyed by the context, so the choice never carries over to another step's candidates.
    choice_key = f"gen_pick_choice_{hash(tuple(stepper.context_ids)) & 0xFFFFFFFF:x}"
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox(
            _("Pick a candidate"), ids, key=choice_key, width=420,
            format_func=lambda i: _("{token} · final p = {p}").format(token=fig.candidate_label(_text(stepper, i)),
                                                                       p=f"{float(probs[i]):.3f}"),
            help=_("Append this token instead of sampling; you may pick one the knobs cut (its final p is then 0)."),
        )
        st.button(_("Pick"), key="gen_pick", on_click=_act, args=("pick", choice_key))
    if stepper.steps:
        last = stepper.steps[-1]
        drawn = f", u = {last.u:.3f}" if last.u is not None else ""
        st.caption(_("Previous step {i}: {token} ({how}{drawn}, p = {p}).").format(
            i=last.index + 1, token=md_escape(fig.candidate_label(last.token)), how=_(HOW[last.how]), drawn=drawn,
            p=f"{last.p_chosen:.3f}"))


def _draw_stages(stepper: Stepper, step: Step, chosen: int | None) -> list[int]:
    stages = step.stages
    ids = fig.top_candidates(stages, N_CANDIDATES)
    if chosen is not None and chosen not in ids:
        ids.append(chosen)
    texts = {i: _text(stepper, i) for i in ids}
    st.plotly_chart(fig.stage_chart(stages, texts, ids, chosen=chosen), key="gen_stages", width="stretch")
    return ids


@dataclass(frozen=True)
class AttentionView:
    layer: int
    head: int
    one_head: bool  # one head's row, or every head of the layer


def attention_ui(stepper: Stepper) -> AttentionView:
    c1, c2 = st.columns([1, 1])
    shown = c1.radio(_("Show"), ATTENTION_VIEWS, format_func=_, key="gen_attn_view", persist_state="session")
    one_head = shown == ATTENTION_VIEWS[0]
    layer, head = widgets.layer_head_selectors(stepper, key="gen", head=one_head, container=c2)
    return AttentionView(layer, head, one_head)


def attention_section(stepper: Stepper) -> None:
    """The newest token's attention over the context, for one head or every head of a layer."""
    st.subheader(_("The newest token's attention"))
    step = stepper.pending or (stepper.steps[-1] if stepper.steps else None)
    if step is None:  # step_section said why
        return
    tokens = stepper.context_tokens[: step.context_length]
    st.markdown(_("The newest context token {token} (position {i}) is the query; its attention over the whole context "
                  "produced this step's distribution. It updates at every step.").format(
        token=md_escape(fig.candidate_label(tokens[-1])), i=len(tokens) - 1))
    view = attention_ui(stepper)
    if view.one_head:
        chart = fig.attention_row_chart(step.attention(view.layer, view.head).numpy(), tokens,
                                        title=_("Layer {layer}, head {head}").format(layer=view.layer, head=view.head))
    else:
        chart = fig.attention_heads_chart(step.attentions(view.layer).numpy(), tokens,
                                          title=_("Layer {layer}, all heads").format(layer=view.layer))
    st.plotly_chart(chart, key="gen_attention", width="stretch")


SECTIONS = (controls_section, text_section, step_section, attention_section)


def _text(stepper: Stepper, token_id: int) -> str:
    return stepper.model.decode_token(token_id)


# ---- GPT vs BERT -------------------------------------------------------------------------------------------------
def gpt_vs_bert(model: Model, stepper: Stepper | None) -> None:
    """Next-token prediction (the stepper's model) beside masked-word prediction (a masked-LM model)."""
    st.subheader(_("GPT vs BERT: the next token vs a masked word"))
    gpt, bert = st.columns(2, gap="large")
    with gpt:
        st.markdown(_("**Causal LM (GPT-style)**: reads left to right; each token sees only the tokens before it."))
        st.latex(r"p(x_t \mid x_{<t})")
        step = stepper.pending if stepper is not None else None
        if step is None:
            st.info(_("Load a causal LM (e.g. smollm2) and step through a prompt to see its next-token prediction."))
        else:
            raw = step.stages[0].probs
            ids = fig.top_candidates(step.stages, 5)
            st.dataframe({_("next token"): [fig.candidate_label(_text(stepper, i)) for i in ids],
                          "probability": [float(raw[i]) for i in ids]}, hide_index=True, column_config=probability())
            st.caption(_("After: {token} (the model's own softmax, T = 1).").format(
                token=md_escape(fig.candidate_label(stepper.context_tokens[-1]))))
    with bert:
        st.markdown(_("**Masked LM (BERT-style)**: sees the whole sentence at once and fills in a hidden word from "
                      "both sides."))
        st.latex(r"p(x_i \mid x_{\neq i})")
        _fill_mask_panel(model)


def _fill_mask_panel(model: Model) -> None:
    if model.kind == "masked-lm":
        mlm_name = model.name
        st.caption(_("Using the sidebar's model, **{model}** (a masked LM).").format(model=md_escape(model.name)))
    else:
        if model.kind == "encoder":
            st.info(md_escape(no_masked_lm_message(model)))
        st.text_input(_("Masked-LM model"), value=MASKED_LM_EXAMPLES[0], key="gen_mlm", persist_state="session",
                      help=_("A Hugging Face id (needs the server online or the model in its cache) or a local folder "
                             "with a *ForMaskedLM model. Models that work: {models}.").format(
                          models=join(MASKED_LM_EXAMPLES)))
        mlm_name = st.session_state.get("gen_mlm", MASKED_LM_EXAMPLES[0]).strip()
    st.text_input(_("Sentence with {mask}").format(mask=PLACEHOLDER), value=DEFAULT_MASKED, key="gen_mask_text", persist_state="session",
                  max_chars=2000)
    text = st.session_state.get("gen_mask_text", DEFAULT_MASKED)
    if st.button(_("Fill mask"), key="gen_fill"):
        st.session_state.pop(FILLED, None)
        with widgets.guard():
            mlm = resources.model_for(mlm_name, state.current_selection().device)
            result = fill_mask(mlm, text, top=8, max_tokens=state.settings().max_tokens)
            st.session_state[FILLED] = (mlm_name, text, result)
    filled = st.session_state.get(FILLED)
    if filled is None or filled[:2] != (mlm_name, text):
        st.caption(_("Press **Fill mask** to run {model} on the sentence.").format(
            model=md_escape(mlm_name) or _("the model")))
        return
    result = filled[2]
    prediction = result.predictions[0]
    st.dataframe({f"{PLACEHOLDER} =": [fig.candidate_label(c.token) for c in prediction.candidates],
                  "probability": [c.prob for c in prediction.candidates]}, hide_index=True, column_config=probability())
    last = prediction.rows.shape[0] - 1
    st.plotly_chart(
        fig.attention_row_chart(prediction.rows[last].mean(0).numpy(), result.tokens, query=prediction.position,
                                height=260, title=_("{mask}'s attention (last layer, mean of heads): both ways").format(
                                    mask=PLACEHOLDER)),
        key="gen_mask_attention", width="stretch",
    )
    if len(result.predictions) > 1:
        st.caption(_("The sentence has {n} masks; showing the first.").format(n=len(result.predictions)))
