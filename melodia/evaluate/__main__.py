"""``python -m melodia.evaluate …``: the same as ``melodia evaluate …``.

Example: ``python -m melodia.evaluate --corpus C --out eval --n 16``
"""
from __future__ import annotations

import argparse
import sys

from ..errors import MelodiaError
from .run import add_evaluate_arguments, cli_evaluate


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as ``melodia evaluate`` does and run it; errors as the ``melodia`` command
    prints them (exit 2). Example: ``main(["--corpus", "C", "--out", "eval"])``."""
    parser = add_evaluate_arguments(argparse.ArgumentParser(
        prog="python -m melodia.evaluate", description="metrics and a report for a model"))
    args = parser.parse_args(argv)
    try:
        return int(cli_evaluate(args) or 0)
    except MelodiaError as e:
        print(f"melodia: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melodia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
