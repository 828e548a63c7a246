"""One small exception hierarchy: the CLI turns any of these into a one-line message."""


class Gemma4Error(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(Gemma4Error, ValueError):
    """Bad user input: a missing or unreadable file, an invalid argument, an unsupported format."""


class ModelLoadError(Gemma4Error):
    """A checkpoint cannot be loaded: wrong model type, missing tensor, wrong shape, bad config."""


class ConversionError(Gemma4Error):
    """A checkpoint cannot be converted."""


class ConversionInputError(ConversionError, InputError):
    """A conversion refused because of its input: a bad source folder or side file, a refused output
    folder, an invalid option (the CLI exits 2 for these; other ``ConversionError`` s are runtime failures)."""
