"""structlog, configured once by the CLI; library code only asks for a logger."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(log_format: str = "console", verbose: bool = False, stream: TextIO | None = None) -> None:
    """Human lines on the console, or JSON lines for machines; always on stderr,
    so stdout carries only container output and command results."""
    out = stream or sys.stderr
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if log_format == "json":
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
