"""`sevimg serve`: a dispatch-compatible HTTP-boot server for a local artifact folder.

Stages, each in its own module: :mod:`.files` turns a verified artifact
folder into jobs, :mod:`.jobs` is the state machine (pure, with an
injectable clock), :mod:`.http` the server, :mod:`.results` the results
folder, :mod:`.issues` the optional GitHub issues, :mod:`.table` the live
table. See docs/serve.md.
"""
