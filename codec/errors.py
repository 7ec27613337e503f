"""The one exception type the codec raises for bad input."""


class PayloadError(ValueError):
    """A payload that cannot be decoded (or encoded); the message names what is wrong."""
