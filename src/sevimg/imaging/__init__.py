"""Making the images: mkosi on rendered trees, payload tools, and checks of the built UKI.

Named `imaging`, not `build`: `build/` is the (ignored) output folder of tools.
"""
