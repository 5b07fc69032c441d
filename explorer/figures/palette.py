"""The one palette of every figure, named by role (one spelling: colour). Chosen to read on light and dark themes."""

SEQUENTIAL = "Viridis"  # probabilities and weights, 0 → 1
DIVERGING = "RdBu_r"  # signed values and differences, centred on 0

ACCENT = "#ff4b4b"  # Streamlit's accent red: the query token, the selected head, the highest score
HIGHLIGHT = "#f59e0b"  # amber: the attention sink, the picked key, a changed prediction (visible on Viridis)
MAIN = "#3b82f6"  # blue: plain bars and lines, allowed cells
MUTED = "#9ca3af"  # grey: masked cells
CUT = "rgba(150, 150, 150, 0.55)"  # what a sampling stage removed
GUIDE = "rgba(128, 128, 128, 0.8)"  # dotted guides and token dots
POSITIVE = "#2563eb"
NEGATIVE = "#dc2626"
FAILED = "#d62728"  # a check outside its tolerance

# Two series side by side (textbook vs variant, kept vs chosen), plotly's first two defaults.
FIRST = "#1f77b4"
FIRST_FADED = "rgba(31, 119, 180, 0.35)"
SECOND = "#ff7f0e"

# Several runs of one text on one chart (clean, ablated, a control, …): blue, amber, green, red.
RUNS = (MAIN, HIGHLIGHT, "#10b981", "#ef4444")
