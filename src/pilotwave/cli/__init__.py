"""The `pilotwave` command line (typer)."""
