"""Running mkosi on rendered trees, payload tools, and checks of the built UKI."""
