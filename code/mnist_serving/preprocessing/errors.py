"""The errors of the preprocessing: what cannot become an MNIST image."""


class PreprocessingError(ValueError):
    """The input cannot become an MNIST image: unreadable, not an image, blank."""


class ImageTooLargeError(PreprocessingError):
    """A file or an image over a size limit; nothing of it was decoded."""
