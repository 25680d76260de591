"""Allow `python -m sevimg`."""

from sevimg.entry import main

main()
