"""The README's quick start runs and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_prints_what_it_claims():
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    printed = out.getvalue().splitlines()
    claimed = re.findall(r"print\(.*\)\s+# (\[.*\])", code)
    assert claimed == ["[0.537 0.851 0.952]", "[0.415 0.541 0.581]"]
    assert printed[:2] == claimed


def test_one_step_at_a_time_runs():
    """The README's cells, streaming and episodes example runs as written."""
    import pytest
    pytest.importorskip("torch")
    text = README.read_text()
    section = text.split("## One step at a time")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert tuple(namespace["h"].shape) == (4, 32)
    assert namespace["state"][0].shape == (1, 32)
    assert namespace["lstm"].weight_hh_l0.grad is not None
