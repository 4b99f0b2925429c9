class HarnessError(Exception):
    """An error the user caused (bad spec, missing file, ...): the CLI prints it and exits with status 2."""
class DataError(HarnessError):
    """A dataset could not be built: bad root, missing or corrupt files, bad task."""
