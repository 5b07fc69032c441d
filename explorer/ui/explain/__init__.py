"""The Explain page's tabs: weight vs contribution (weights), why a head looks there (qk), which tokens drove the
output (tokens). One module per tab, each with a ``tab()`` function; pages/explain.py draws them in that order."""
