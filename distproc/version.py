"""distproc's version, in a module of its own that imports nothing (the package's __init__
names every public type, so importing it from inside distproc would tie modules in circles)."""

__version__ = "0.1.0"
