"""The names ``explorer.ui.common`` used to hold, re-exported for code written before it was split by concern.

New code imports from the module that owns each name: :mod:`explorer.ui.state` (settings, the sidebar's selection and
unit, the URL, language, the suggested model, going to another page), :mod:`explorer.ui.resources` (cached models and
traces), :mod:`explorer.ui.sidebar`, :mod:`explorer.ui.widgets` (guard, progress, selectors, the unit's counts and
note), :mod:`explorer.ui.caching` (the one ``st.cache_data`` helper, ``unit_key``), :mod:`explorer.ui.maps` (what
several pages read of a trace, ``shown``) and :mod:`explorer.ui.tabs`. Nothing in this repository imports this module; it goes once the branches in flight
are merged.
"""

from __future__ import annotations

from .caching import unit_key  # noqa: F401
from .maps import shown  # noqa: F401
from .resources import (  # noqa: F401
    PATH_HIDDEN, current_model, current_trace, cut_by_page, dtype_name, make_trace_key, model_for, trace_for,
    truncation_notice,
)
from .sidebar import sidebar  # noqa: F401
from .state import (  # noqa: F401
    CHINESE_MODEL, DEFAULT_TEXT, DEVICES, EXPLAIN_PAGE, HEADS_PAGE, INTERVENE_HEADS_KEY, INTERVENE_PAGE,
    LANGUAGE_KEY, MASK_LABELS, MAX_INDEX_DIGITS, MAX_MODEL_CHARS, MAX_TEXT_CHARS, OTHER_MODEL, UNIT_KEY,
    UNIT_LABELS, Selection, UrlView, current_selection, device_options, init_language, leave_legacy_pages_mode,
    open_explain, open_intervene, open_on_heads_page, parse_url, require_entrypoint, settings, suggested_model,
    sync_query_params, visitor_is_local,
)
from .widgets import (  # noqa: F401
    guard, kv_sharing_note, layer_head_selectors, progress, quoted, unit_count, word_view_note,
)
