"""The Explain page's tabs: weight vs contribution (weights.py), why a head looks there (qk.py), which tokens drove a
prediction (tokens.py)."""
