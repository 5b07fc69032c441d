"""Crafted inputs shared by the AppTest and Chromium tests: link parameters, texts, and token strings that are whole
tags, with a tiny model whose tokens are exactly those strings (one token per line of text)."""

from __future__ import annotations

from pathlib import Path

EVIL = "https://evil.example"
MODEL_LINKS = {
    "markdown-link": f"[Log in]({EVIL}/x)",
    "markdown-image": f"![x]({EVIL}/p.png)",
    "raw-html": f'<img src="{EVIL}/i.png" onerror="alert(1)">',
    "autolink": f"<{EVIL}/a>",
    "literal-autolinks": f"{EVIL}/bare www.evil.example mail@evil.example",
    "directives-maths": ":red[red] :material/home: $x^2$ **b** `c` \\(x\\)",
    "reference-link": f"[a][r]\n\n[r]: {EVIL}/r",
}
# Index parameters that are not ASCII digits in range: superscripts and Arabic-Indic digits pass str.isdigit().
BAD_INDICES = ["²", "³", "٣", "1e3", "-1", "99999999999999999999", " 1", "0x1", "", "1.0", "１"]
TEXT_PAYLOAD = (f"[a]({EVIL}/t) ![i]({EVIL}/i.png) <{EVIL}/u> www.evil.example $x$ **b** <b>x</b> "
                "<img src=x onerror=alert(1)>")
# Tokens that are whole tags or Markdown/LaTeX/Plotly constructs.
TAG_TOKENS = [
    "<b>bold</b>", "<img src=x onerror=alert(1)>", f'<a href="{EVIL}/t">t</a>', f"[a]({EVIL}/a)",
    f"![p]({EVIL}/p.png)", f"<{EVIL}/auto>", f"{EVIL}/bare", "www.evil.example", "mail@evil.example", "$x^2$",
    "**bold**", "`code`", ":red[red]", ":material/home:", ":smile:", "->", "%{meta}", "&lt;&amp;", "# heading",
    "| a | b |", "<br>", "<script>window.__xss=1</script>",
]
TAG_TEXT = "\n".join(TAG_TOKENS)


def tag_model(folder: str | Path) -> str:
    """Save a tiny random Llama (GQA, causal LM) into ``folder`` whose tokenizer keeps each line as one token."""
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", *TAG_TOKENS, *(f"w{i}" for i in range(128 - 2 - len(TAG_TOKENS)))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("\n"), behavior="removed")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(folder)
    return str(folder)
