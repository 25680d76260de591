"""Specs to mkosi trees: templates laid out as files in memory. Pure (sevimg.atomic writes them)."""
