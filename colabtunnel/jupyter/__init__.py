"""Jupyter: the flavours and the Colab flags each takes, the host's own configs, what the
inspection finds on a host, the probe that checks a server the way Colab's page uses it, the
diagnoses of a failed start, and the GPUs. Imports ssh/ (to run scripts on a host) and the
top-level base modules, never keeper/, launchers/ or commands/."""
