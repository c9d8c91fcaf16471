"""colabtunnel: Google Colab's local-runtime UI on a GPU host reached over SSH."""

__version__ = "0.1.0"
# The distribution that ships this package. An unrelated PyPI project, `colabtunnel`, ships a
# package of the same name; __main__ checks this marker before anything else.
__distribution__ = "colabtunnel-ssh"
