"""colabtunnel: Google Colab's local-runtime UI on a GPU host reached over SSH."""

__version__ = "0.1.0"
