"""The ``sentinel`` command: a thin layer over the library. See ``sentinel --help``."""
