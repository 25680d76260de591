"""Specs to mkosi trees: templates, and writing trees atomically. Pure but for the writes."""
