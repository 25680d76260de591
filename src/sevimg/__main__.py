"""Allow `python -m sevimg`."""

from sevimg.cli import main

main()
