"""Errors a user can act on: each names the modality, key or file at fault and what was expected."""


class DynmmError(Exception):
    """Base class of every error dynmm raises on purpose."""


class InputError(DynmmError, ValueError):
    """A batch does not match what the model or data set expects (missing key, shape, dtype, NaN/inf)."""


class ConfigError(DynmmError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, unknown name)."""


class DataError(DynmmError, ValueError):
    """A data file is missing or not in the expected format."""
