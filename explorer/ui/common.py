"""The names ``explorer.ui.common`` used to hold, re-exported for code written before it was split by concern.

New code imports from the module that owns each name: :mod:`.state` (settings, the sidebar's selection, the URL,
language, going to another page), :mod:`.resources` (cached models and traces), :mod:`.sidebar`, :mod:`.widgets`
(guard, progress, selectors), :mod:`.caching` (the one ``st.cache_data`` helper), :mod:`.maps` (what several pages read
of a trace) and :mod:`.tabs`. Nothing in this repository imports this module; it goes once the branches in flight
are merged.
"""

from __future__ import annotations

from .resources import (  # noqa: F401
    PATH_HIDDEN, current_model, current_trace, cut_by_page, dtype_name, make_trace_key, model_for, trace_for,
    truncation_notice,
)
from .sidebar import sidebar  # noqa: F401
from .state import (  # noqa: F401
    DEFAULT_TEXT, DEVICES, HEADS_PAGE, INTERVENE_HEADS_KEY, INTERVENE_PAGE, LANGUAGE_KEY, MASK_LABELS,
    MAX_INDEX_DIGITS, MAX_MODEL_CHARS, MAX_TEXT_CHARS, OTHER_MODEL, Selection, UrlView, current_selection,
    device_options, init_language, leave_legacy_pages_mode, open_intervene, open_on_heads_page, parse_url,
    require_entrypoint, settings, sync_query_params, visitor_is_local,
)
from .widgets import guard, kv_sharing_note, layer_head_selectors, progress, quoted  # noqa: F401
