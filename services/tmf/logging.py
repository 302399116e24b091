"""structlog JSON logging; every line carries the request id bound by the request middleware."""

from __future__ import annotations

import logging
import sys

import structlog

from .telemetry import add_trace_ids


def configure_logging(level: str = "INFO") -> None:
    """Send structlog and standard-library records to stderr as one JSON object per line; an
    exception's traceback travels in the line's ``exception`` attribute."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_trace_ids,  # telemetry: trace_id and span_id while a span is current
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # uvicorn's own access log would duplicate ours, without the request id.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every outgoing request at INFO; deliveries keep their own records.
    logging.getLogger("httpx").setLevel(logging.WARNING)
