"""Command-line interface: ``medprune <command>``; one module per command."""
