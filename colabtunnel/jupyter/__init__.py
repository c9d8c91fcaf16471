"""Jupyter: the flavours and the Colab flags each takes, the host's own configs, what the
inspection finds on a host, the Colab probe (probe: its checks in order; colab_calls: the requests
Colab's page makes; probe_transport: how they reach the server; verdicts: what a right answer is
and the fix for each wrong one), the diagnoses of a failed start, and the GPUs. Imports ssh/ (to
run scripts on a host) and the top-level base modules, never keeper/, launchers/ or commands/."""
