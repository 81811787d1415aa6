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
from fusedrnn import _kernel

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


def test_the_wheel_serves_every_cpython_from_3_11_on_glibc_2_17():
    """CI's one wheel: the stable ABI of CPython 3.11 (pyproject's
    wheel.py-api) and manylinux2014 (.ci/cc-manylinux2014, auditwheel
    repair --plat), and the module in it the stable ABI's."""
    _, _, python, abi, platforms = Path(WHEEL).stem.split("-")
    assert (python, abi) == ("cp311", "abi3")
    assert set(platforms.split(".")) == {"manylinux_2_17_x86_64", "manylinux2014_x86_64"}
    assert Path(_kernel.__file__).name == "_kernel.abi3.so"
