"""melodia's version, in one place (pyproject.toml's ``version`` says the same).

Example: ``from melodia.version import __version__  # "0.1.0"``
"""
__version__ = "0.1.0"
