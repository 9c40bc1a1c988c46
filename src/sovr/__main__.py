"""`python -m sovr` is the `sovr` command."""

from sovr.cli import app

app(prog_name="sovr")
