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
