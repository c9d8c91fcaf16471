"""Logging set-up: the `colabtunnel` logger, with every record masked before it reaches a file."""

from __future__ import annotations

import logging
import os

from colabtunnel import paths
from colabtunnel.redact import mask


class MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_file_logging(profile: str) -> None:
    """Log colabtunnel and paramiko to logs/PROFILE.log, tokens masked."""
    path = paths.log_file(profile)
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))  # created 0600
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("colabtunnel", "paramiko"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if name == "colabtunnel" else logging.WARNING)


def setup_console_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("colabtunnel")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
