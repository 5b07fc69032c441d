"""A tab of the Explain page, being built on another branch (the lead replaces this stub at merge)."""
import streamlit as st

from ...i18n import _


def tab() -> None:
    st.info(_("This tab is being built."))
