"""Errors for user mistakes and bad input. The CLI prints these as one line (exit 2); the GUI as a dialog."""


class ParallaxError(Exception):
    """Base: a problem with the user's input or environment, not a bug. Message must say what and where."""


class InputNotFound(ParallaxError):
    pass


class UnsupportedFormat(ParallaxError):
    pass


class CorruptInput(ParallaxError):
    pass


class SchemaTooNew(ParallaxError):
    pass


class UnsafePath(ParallaxError):
    pass


class SaveFailed(ParallaxError):
    pass
