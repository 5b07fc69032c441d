"""Generation: step through a causal LM's sampling one token at a time, and compare it with BERT's fill-mask."""

import streamlit as st

from explorer.ui import common as ui
from explorer.ui import generation as gen

ui.require_entrypoint()

st.title("Generation")
st.caption("A language model writes one token at a time: it turns the context into a distribution over its "
           "vocabulary, the sampling knobs reshape and cut that distribution, and one token is drawn. Step through it.")

with ui.guard():
    model = ui.current_model()
    stepper = None
    with ui.guard():
        stepper = gen.generation_section(model)
    st.divider()
    gen.gpt_vs_bert(model, stepper)
