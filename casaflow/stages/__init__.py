"""Stage modules. Importing this package registers every ``casa-worker`` stage."""

from . import basic, simulate, vlass  # noqa: F401
