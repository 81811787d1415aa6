"""The package under test is the installed wheel, not the source tree.

.ci/run sets FUSEDRNN_TEST_WHEEL to the manylinux wheel it built and
installed; without it (a developer's run) there is nothing to check.
"""

import os
import re
from importlib import metadata
from pathlib import Path

import pytest

import fusedrnn

WHEEL = os.environ.get("FUSEDRNN_TEST_WHEEL")
SOURCE = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(WHEEL is None, reason="FUSEDRNN_TEST_WHEEL is not set")


def test_fusedrnn_is_imported_from_the_installed_wheel():
    assert not Path(fusedrnn.__file__).resolve().is_relative_to(SOURCE), \
        f"fusedrnn was imported from the source tree: {fusedrnn.__file__}"
    # The WHEEL file of the installed distribution carries the tags of the
    # wheel it came from: those in the file name of the one .ci/run built.
    tags = re.findall(r"^Tag: (.*)$", metadata.distribution("fusedrnn").read_text("WHEEL"),
                      re.M)
    # A file name lists several platforms of one wheel joined by dots.
    name, version, python, abi, platforms = Path(WHEEL).stem.split("-")
    assert (name, version) == ("fusedrnn", fusedrnn.__version__)
    assert sorted(tags) == sorted(f"{python}-{abi}-{p}" for p in platforms.split("."))
    assert all("manylinux" in tag for tag in tags)
