"""Home: attention for the sidebar's text at first sight (one telling head, every head small), its tokens, and a
tour of the pages. The sections live in explorer/ui/home.py."""

import streamlit as st

from explorer.ui import common as ui
from explorer.ui import home

ui.require_entrypoint()
home.follow_pick()

st.title("Attention Explorer")
home.intro()
with ui.guard():
    trace = ui.shown(ui.current_trace())  # by token or by word, as the sidebar says
    home.first_look(trace)
    home.token_strip(trace, str(ui.current_model().device))
home.tour()
