"""A Chinese page says nothing in English: every page of app.py, opened with ``?lang=zh`` (AppTest, the real embedded
model a Chinese reader starts with: Gemma 3), with each of its tabs and the buttons that draw more (the worked
examples, a generation step, the kernel timings), and every element walked: Markdown, captions, alerts, metrics,
widget labels, help texts and options, tab and expander labels, table headers, the words inside LaTeX ``\\text{}``,
and every plotly chart's title, axis titles, legend, trace names, hover templates, colour-bar titles and annotations.

A word of three or more Latin letters fails the test unless it is

- the reader's own data: a word of the text or of a token (user text is shown as it is), or a model's name;
- a term that Chinese ML writing keeps in Latin letters (ALLOWED: softmax, logit, top-k, RoPE, CPU, nats, …);
- an English gloss in full-width brackets right after its Chinese term, as docs/translating.md asks the first time
  a term appears (注意力汇（attention sink）);
- code in backticks, a formula between ``$``, or a Plotly ``%{…}`` field (data, not prose).
"""

from __future__ import annotations

import html
import json
import re

import pytest
from google.protobuf.json_format import MessageToDict
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, app_pages
from explorer.capture.embedded import EMBEDDED
from explorer.decoding.fill_mask import MASKED_LM_EXAMPLES, PLACEHOLDER
from explorer.i18n import _, speaking

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")

# A short text with a Chinese and an English sentence: its words are data, allowed; the tokens it makes are too.
TEXT = "The cat sat on the mat. 小猫坐在垫子上。"
# Kept in Latin letters in Chinese ML texts (and in this app's catalogue): names of models, libraries, formats and
# units, and the symbols of the formulas. Each is a term, never a sentence.
ALLOWED = {
    "softmax", "Softmax", "logit", "logits", "top-k", "top-p", "RoPE", "GQA", "MQA", "KV", "QK-norm", "PCA", "SDPA",
    "CPU", "GPU", "CUDA", "cpu", "cuda",  # cpu / cuda: PyTorch's device names, as the device switch offers them
    "TF32", "float32", "float16", "bfloat16", "nats", "MiB", "GiB", "CSV", "PNG", "HTML",
    "npz", "GPT", "BERT", "BertViz", "Transformer", "RMSNorm", "LaTeX", "NaN", "max", "min", "exp", "log", "log10",
    "cos", "lse",
    "Attention", "Explorer",  # the product's name, shown as it is
    "Language", "English",  # the language switch names both languages, so a reader of neither finds it
    "FlashAttention", "flash", "math", "PyTorch", "torch", "kaleido", "plotly", "Hugging", "Face", "Hub", "gpt2",
    "Instruct", "SmolLM2-Instruct", "transformers", "ForMaskedLM", "log-sum-exp", "MLP", "rotate-half", "autocast", "half", "Chromium", "GGUF", "BertForMaskedLM", "SmolLM2", "MiniLM", "Gemma", "Llama", "Qwen",
    "Mistral",
}
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'\-]*[A-Za-z0-9]")
GLOSS = re.compile(r"（[A-Za-z][A-Za-z0-9 ,\-']*[，、]?[^（）]*）")  # 注意力汇（attention sink）, 滑动窗口（sliding window，局部层）


PAGES = app_pages()
# Tabs whose content runs only when open: their state key and labels (translated when set).
TABS = {"pages/heads.py": ("heads_tab", ["Heads of one layer", "All layers × heads", "One head", "Lines (head view)"]),
        "pages/analysis.py": ("analysis_section", ["Statistics", "Q/K geometry", "Logit lens", "Rollout", "Export"]),
        "pages/intervene.py": ("intervene_tab", ["Ablate", "Patch"]),
        "pages/scratch.py": ("scratch_tab", ["Textbook vs the model", "The tutorial variant", "Kernels and devices"])}
# Buttons that draw more of a page (what a reader presses first), by key; clicked on the tab where they live.
PRESS = {"pages/intervene.py": ["intervene_induction_example", "intervene_ioi_example"],
         "pages/generation.py": ["gen_greedy"],
         "pages/scratch.py": ["scratch_run_sweep"]}


def english_words(text: str, data: set[str]) -> list[str]:
    """The English words of a shown string, once data, allowed terms, glosses, code, formulas and fields are out."""
    text = re.sub(r"\\(.)", r"\1", text)  # Markdown escapes: bert\-base → bert-base
    text = re.sub(r"<[^>]+>", " ", html.unescape(text))  # plotly's HTML: <br>, <extra>, <span …>, &lt;bos&gt;
    text = re.sub(r"\d[\d.]*e[-+]?\d+", " ", text)  # numbers: 1.5e-05, −1e20
    text = re.sub(r"'[^'\n]*'|\[[A-Z]{2,}\]", " ", text)  # a token shown as its repr (' Paris'), [CLS], [SEP]
    text = re.sub(r"%\{[^}]*\}|\$[^$]*\$|`[^`]*`|:material/\w+:|:[a-z]+-background\[|https?://\S+", " ", text)
    text = GLOSS.sub(" ", text)
    # a word with an underscore is a symbol or a name in code (d_k, W_q, p_j, AE_MAX_TOKENS), not prose
    return [w for w in WORD.findall(text) if len(w) >= 3 and "_" not in w and w not in ALLOWED and w not in data]


def latex_prose(body: str) -> str:
    """The words of a LaTeX formula that are prose: what is inside ``\\text{…}``."""
    return " ".join(re.findall(r"\\text\{([^{}]*)\}", body))


def figure_strings(spec: dict) -> list[str]:
    """Every string a plotly figure shows as prose: titles, axis and colour-bar titles, legend, trace names, hover
    templates, annotations (not the data: tick labels and hover texts are the tokens)."""
    found = []

    def title(obj) -> None:
        if isinstance(obj, dict):
            found.append(str((obj.get("title") or {}).get("text", "")) if isinstance(obj.get("title"), dict)
                         else str(obj.get("title") or ""))

    layout = spec.get("layout", {})
    title(layout)
    for name, value in layout.items():
        if re.fullmatch(r"[xy]axis\d*|coloraxis\d*|legend\d*", name) and isinstance(value, dict):
            title(value)
            title(value.get("colorbar"))
    found += [str(a.get("text", "")) for a in layout.get("annotations", [])]
    for trace in spec.get("data", []):
        hover = trace.get("hovertemplate")
        hovers = hover if isinstance(hover, list) else [str(hover or "")]
        # a trace's name shows in the legend, or in its hover box unless <extra></extra> or no hover hides it there
        templated = [h for h in hovers if h]
        named_in_hover = (trace.get("hoverinfo") not in ("skip", "none")
                          and not (templated and all("<extra>" in h for h in templated)))
        if trace.get("showlegend") is not False or named_in_hover:
            found.append(str(trace.get("name") or ""))
        found.append(str(trace.get("legendgrouptitle", {}).get("text", "")))
        found += hover if isinstance(hover, list) else [str(hover or "")]
        title(trace.get("colorbar"))
        title((trace.get("marker") or {}).get("colorbar"))
    return [s for s in found if s]


SHOWN_FIELDS = {"body", "label", "help", "placeholder", "options", "delta", "caption", "title"}


def element_strings(proto) -> list[str]:
    """The prose fields of one element's protobuf (labels, bodies, help texts, options), not its data or values."""
    found = []

    def walk(node, key=None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in SHOWN_FIELDS:
            found.append(node)

    walk(MessageToDict(proto, preserving_proto_field_name=True))
    return found


def page_strings(at: AppTest) -> list[tuple[str, str]]:
    """(where, text) for everything the run shows, main area and sidebar."""
    found = []

    def visit(node) -> None:
        kind = getattr(node, "type", "")
        proto = getattr(node, "proto", None)
        if kind == "plotly_chart":
            spec = json.loads(proto.spec)
            found.extend((f"figure {proto.id[-30:]}", s) for s in figure_strings(spec))
        elif kind in ("arrow_data_frame", "dataframe", "table"):
            frame = node.value
            # a header is the column's name unless the page's column_config gives it a label
            config = json.loads(proto.columns) if getattr(proto, "columns", "") else {}
            labels = {name: (c or {}).get("label") for name, c in config.items()}
            names = [labels.get(str(c).removeprefix("col:")) or labels.get(f"col:{c}") or str(c) for c in frame.columns]
            names += [str(n) for n in (*frame.columns.names, *frame.index.names) if n]
            found.extend(("table header", n) for n in names)
        elif kind == "html":
            pass  # the app's only HTML is the generated text (Generation): the model's words, data
        elif proto is not None and hasattr(proto, "DESCRIPTOR"):
            for text in element_strings(proto):
                found.append((kind, latex_prose(text) if text.startswith("$$") else text))
        for child in getattr(node, "children", {}).values():
            visit(child)

    visit(at._tree)
    return found


def no_failure(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]  # a page that fails shows little: it would pass for little


def open_zh(page: str, model: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"lang": "zh", "text": TEXT, **({"model": model} if model else {})})
    at.run()
    no_failure(at)
    if page != PAGES[0]:
        at.switch_page(page).run()
        no_failure(at)
    return at


def data_words(at: AppTest) -> set[str]:
    """The words that are the reader's data on this run: the text (its tokens are pieces of it), the prompts and
    texts typed into a page, the models' names and descriptions."""
    sources = [TEXT, *EMBEDDED, *(m.description for m in EMBEDDED.values()), *MASKED_LM_EXAMPLES, PLACEHOLDER]
    for key in ("gen_prompt", "intervene_clean", "intervene_corrupt", "intervene_answer", "intervene_wrong"):
        if key in at.session_state:
            sources.append(str(at.session_state[key]))
    return {w for s in sources for w in WORD.findall(s)}


def leaks(at: AppTest, where: str) -> list[str]:
    data = data_words(at)
    return [f"{where} · {kind}: {words} in {text[:160]!r}" for kind, text in page_strings(at)
            if (words := english_words(text, data))]


def test_an_explicit_model_or_an_english_reader_keeps_the_default():
    # (a Chinese reader who names no model starts with Gemma 3: every walk below checks it)
    for query, expected in (({"lang": "zh", "model": "smollm2"}, "smollm2"), ({"lang": "en"}, "smollm2")):
        at = AppTest.from_file(APP, default_timeout=600)
        at.query_params.update({**query, "text": TEXT})
        at.run()
        assert at.session_state["model_choice"] == expected, query


def walk(page: str, model: str | None = None) -> list[str]:
    """Open ``page`` in Chinese, then each of its tabs and the buttons that draw more; every leak found."""
    at = open_zh(page, model)
    assert at.session_state["model_choice"] == (model or "gemma3")
    key, tabs = TABS.get(page, (None, [None]))
    found = []
    for tab in tabs:
        if tab is not None:
            at.session_state[key] = _(tab)
            at.run()
            no_failure(at)
        found += leaks(at, tab or page)
        for button in PRESS.get(page, []):
            if not [b for b in at.button if b.key == button]:
                continue  # it lives on another tab
            if button == "scratch_run_sweep":  # the shortest sweep: every chart and table, a second's work
                at.select_slider(key="scratch_max_n").set_value(at.select_slider(key="scratch_max_n").options[0])
                at.number_input(key="scratch_repeats").set_value(1)
            [b for b in at.button if b.key == button][0].click().run()
            no_failure(at)
            found += leaks(at, f"{tab or page} after {button}")
    return found


# Every page with the model a Chinese reader starts with; the pages whose text depends on the model's kind once more
# with SmolLM2 (GQA, RoPE, a causal LM's sentences) and MiniLM (an encoder's).
CASES = ([(page, None) for page in PAGES]
         + [(page, "smollm2") for page in ("pages/heads.py", "pages/qkv.py", "pages/scratch.py")]
         + [(page, "minilm") for page in ("pages/home.py", "pages/qkv.py", "pages/masking.py", "pages/generation.py")])


@pytest.mark.parametrize("page, model", CASES, ids=[f"{p.split('/')[-1][:-3]}-{m or 'gemma3'}" for p, m in CASES])
def test_a_chinese_page_shows_no_english(page, model):
    # AppTest formats widgets' options (format_func) in this thread, not the script's: it speaks Chinese too
    with speaking("zh"):
        found = walk(page, model)
    assert not found, f"{len(found)} English strings on a Chinese page:\n" + "\n".join(dict.fromkeys(found))


def test_the_walker_sees_what_a_page_shows():
    # the test's own instruments: a leak planted in Markdown, a figure's axis, a hover template and a LaTeX \text{}
    # is reported; the allowed kinds of Latin text are not
    assert english_words("注意力汇（attention sink）在 `map__x` 中，$\\mathrm{softmax}$ 与 top-k", set()) == []
    assert english_words("第 %{x} 层<br>注意力 %{z:.4f}<extra>gemma3</extra>", {"gemma3"}) == []
    assert english_words("The cat 坐了", {"The", "cat"}) == []
    assert english_words("position %{x}<br>loss", set()) == ["position", "loss"]
    assert latex_prose(r"M_{ij} = 0 \quad \text{for all } i, j") == "for all "
    spec = {"layout": {"title": {"text": "layer 3"}, "xaxis2": {"title": {"text": "key position"}},
                       "annotations": [{"text": "sink?"}]},
            "data": [{"name": "before (mean 1.2)", "hovertemplate": "predicting %{x}", "colorbar": {"title": "rollout"}}]}
    assert sorted(w for s in figure_strings(spec) for w in english_words(s, set())) == sorted(
        ["layer", "key", "position", "sink", "before", "mean", "predicting", "rollout"])


def test_the_walker_reads_a_real_page():
    # the same walk over the English Home page finds English everywhere a Chinese page must not have it: in prose,
    # in widget labels and in the figures (so a page walked in Chinese was walked for real)
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"lang": "en", "text": TEXT})
    at.run()
    no_failure(at)
    kinds = {line.split(" · ")[1].split(":")[0].split(" ")[0] for line in leaks(at, "home")}
    assert {"markdown", "figure", "selectbox", "radio"} <= kinds, kinds
