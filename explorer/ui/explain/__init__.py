"""The Explain page's tabs: weight vs contribution (weights), why a head looks there (qk), which tokens drove the
output (tokens). One module per tab, each with a ``tab()`` function; pages/explain.py draws the open one."""

from ...i18n import N_
from . import qk, tokens, weights

TABS = [N_("Weight vs contribution"), N_("Why it looks there"), N_("Which tokens drove it")]
TAB_KEY = "explain_tab"  # the open tab (its translated label), set by links from other pages
QK_TAB = TABS[1]
DRAW = {TABS[0]: weights.tab, TABS[1]: qk.tab, TABS[2]: tokens.tab}
