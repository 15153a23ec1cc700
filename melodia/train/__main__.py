"""``python -m melodia.train …``: ``melodia train`` without the rest of the CLI.

Example:
    $ python -m melodia.train --data tokens --preset tiny --out runs/tiny
"""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
