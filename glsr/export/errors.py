"""Export errors: every failure names what failed and where, and is a ``ValueError`` so the CLI prints one line."""
from __future__ import annotations


class ExportError(ValueError):
    """An export step failed; the message names the format and the cause."""


class UnsupportedOpError(ExportError):
    """The graph holds an op the target format cannot convert: names the op, the node and the format."""

    def __init__(self, op: str, node: str, fmt: str, detail: str = ""):
        self.op, self.node, self.format = op, node, fmt
        msg = f"{fmt}: unsupported op {op!r} at node {node!r}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ConverterError(ExportError):
    """A converter ran but produced no valid artifact; carries the tail of its log."""

    def __init__(self, fmt: str, message: str, log: str = ""):
        self.format, self.log = fmt, log
        tail = "\n".join(log.strip().splitlines()[-12:])
        super().__init__(f"{fmt}: {message}" + (f"\n--- converter log (last lines) ---\n{tail}" if tail else ""))
