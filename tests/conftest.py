import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _forget_the_passwords_a_test_showed():
    """Each test starts with the passwords remembered before it (harness.errors hides every
    password it has seen, wherever it turns up, for the life of the process): one test's
    password "other" hid the "other" of a later test's path, as in "an***_process"."""
    from harness import errors

    before = set(errors._SECRETS)
    yield
    errors._SECRETS.clear()
    errors._SECRETS.update(before)
