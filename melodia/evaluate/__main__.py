"""``python -m melodia.evaluate …`` is ``melodia evaluate …`` (an entry point: nothing imports it).

Example: ``python -m melodia.evaluate --corpus C --out eval``
"""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
