"""One exception family; the CLI turns it into one line and a non-zero exit."""


class LatencykitError(Exception):
    """An error the user can act on: its message is the whole story."""


class UnknownNameError(LatencykitError):
    """A device, space, predictor or other registered name that does not exist."""


class ArchitectureError(LatencykitError):
    """An architecture outside its search space."""


class TableError(LatencykitError):
    """A lookup table that is missing, corrupt, or built for another device or space."""


class DeviceUnavailableError(LatencykitError):
    """A device that cannot measure right now (no phone attached, wrong OS, missing runtime)."""
