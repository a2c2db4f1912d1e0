"""Small, deterministic example inputs (``python -m recursa.examples.haystack``)."""
