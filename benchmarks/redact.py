"""Take the recording machine's folders out of result files before they are committed:
``python -m benchmarks.redact FILE...`` rewrites each file (atomically) with every absolute path under that
machine's folders (the one holding the checkout and ``../shared``, the temporary and home folders) shown by
:func:`glsr.paths.portable`: ``../shared/...`` for the reference material, checkout-relative paths, and
``DIR/<folder>/<file>`` for run and scratch folders. Numbers and other text are not touched."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from glsr import atomic
from glsr.paths import portable_text


def redact(paths: Sequence[str | Path]) -> List[Path]:
    """Rewrite the files that name machine folders; the ones changed."""
    changed = []
    for p in map(Path, paths):
        try:
            text = p.read_text()
        except UnicodeDecodeError:   # an image or other binary record: nothing to rewrite
            continue
        new = portable_text(text)
        if new != text:
            atomic.write_text(p, new)
            changed.append(p)
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="text files (JSON, Markdown) to rewrite in place")
    args = ap.parse_args(argv)
    for p in redact(args.files):
        print(f"redacted {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
