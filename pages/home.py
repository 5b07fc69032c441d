"""Home: attention for the sidebar's text at first sight (one telling head, every head small), its tokens, and a
tour of the pages. The sections live in explorer/ui/home.py."""

import streamlit as st

from explorer.ui import home, maps, resources, state
from explorer.ui.widgets import guard

state.require_entrypoint()
home.follow_pick()

st.title("Attention Explorer")
home.intro()
with guard():
    trace = maps.shown(resources.current_trace())  # by token or by word, as the sidebar says
    home.first_look(trace)
    home.token_strip(trace, str(resources.current_model().device))
home.tour()
