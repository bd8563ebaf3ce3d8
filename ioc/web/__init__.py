"""Static operator pages served by the API (index.html: the first live page)."""
