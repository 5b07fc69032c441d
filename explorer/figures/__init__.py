"""Pure figure builders: data in, ``plotly`` figure out. No Streamlit, so they are testable without a browser."""
