"""Stage modules. Importing this package registers every ``casa-worker`` stage."""

from . import alma, basic, simulate, vlass  # noqa: F401
