"""One module per command. Each takes typed arguments and returns data; cli.py renders it."""
