"""Generation: step through a causal LM's sampling one token at a time, and compare it with BERT's fill-mask.

Each section is one function of :mod:`explorer.ui.generation`."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import generation as gen, resources, state
from explorer.ui.widgets import guard

state.require_entrypoint()

st.title(_("Generation"))
st.caption(_("A language model writes one token at a time: it turns the context into a distribution over its "
             "vocabulary, the sampling knobs reshape and cut that distribution, and one token is drawn. Step through "
             "it."))

with guard():
    model = resources.current_model()
    stepper = None
    with guard():
        stepper = gen.stepper_section(model)  # None, with a message, for a model that cannot generate
        for draw in gen.SECTIONS if stepper is not None else ():
            draw(stepper)
    st.divider()
    gen.gpt_vs_bert(model, stepper)
