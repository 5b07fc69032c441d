"""The Explain page's tabs: weight vs contribution (weights), why a head looks there (qk), which tokens drove the
output (tokens). One module per tab, each with a ``tab()`` function; pages/explain.py draws the open one
(:func:`explorer.ui.tabs.lazy_tabs`)."""

from ...i18n import N_
from ..tabs import Tab
from . import qk, tokens, weights

QK_TAB = N_("Why it looks there")  # the tab links from other pages open (explorer.ui.state.open_explain)
TABS: list[Tab] = [
    (N_("Weight vs contribution"), weights.tab),
    (QK_TAB, qk.tab),
    (N_("Which tokens drove it"), tokens.tab),
]
TAB_KEY = "explain_tab"  # the open tab (its translated label), set by links from other pages
