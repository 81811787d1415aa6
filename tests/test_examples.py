"""The examples' short runs (the CI smoke runs of examples/), each as a user
would start it, and the code of docs/api.md beyond the quick start.

Each short run must cut its held-out loss by a stated factor: well inside
what the seeded runs reach (char_rnn, every cell: about 4.10 -> 2.3-2.4
nats/char, forecast: 0.61-0.65 -> 0.05 MSE), far outside what a broken
gradient would give. The torch example's runs must agree with each other
to float32 rounding (they reach 4.8e-7; the test allows 1e-3).
"""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name, *args, cwd):
    """Run examples/<name> with args; returns its stdout."""
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def losses(stdout):
    """The (before, after) held-out losses an example printed."""
    before = re.search(r"before training: ([0-9.]+)", stdout)
    after = re.search(r"after training: +([0-9.]+)", stdout)
    assert before and after, stdout
    return float(before.group(1)), float(after.group(1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_char_rnn_quick_learns_and_generates(tmp_path, cell):
    stdout = run_example("char_rnn.py", "--quick", "--cell", cell, "--length", "80", cwd=tmp_path)
    before, after = losses(stdout)
    assert f"cell {cell}," in stdout
    assert after < before / 1.5, stdout
    sample = stdout.split("sampled at temperature 0.6:\n\n")[1]
    assert sample.startswith("Ham.\n") and len(sample.rstrip("\n")) >= 80, stdout


def test_char_rnn_is_deterministic(tmp_path):
    """The same seed gives the same losses and the same text (wall times aside)."""
    args = ("--quick", "--steps", "10", "--length", "40")
    runs = [re.sub(r"[0-9.]+ s\)", "", run_example("char_rnn.py", *args, cwd=tmp_path))
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert "sampled at temperature" in runs[0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forecast_quick_learns_without_matplotlib(tmp_path, cell):
    stdout = run_example("forecast.py", "--quick", "--cell", cell, "--no-plot", cwd=tmp_path)
    before, after = losses(stdout)
    assert f"cell {cell}," in stdout
    assert after < before / 5, stdout
    assert "forecast RMSE" in stdout and not list(tmp_path.iterdir())


def test_forecast_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    run_example("forecast.py", "--quick", "--epochs", "1", "--plot", "out.png", cwd=tmp_path)
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_dropin_quick_trains_alike_eager_and_compiled(tmp_path):
    """The four runs (torch.nn and the drop-in, eager and compiled) start
    from the same weights on the same batches: each loss falls, and every
    step's loss is the torch.nn eager run's to float32 rounding."""
    pytest.importorskip("torch")
    stdout = run_example("torch_dropin.py", "--quick", cwd=tmp_path)
    runs = dict(re.findall(r"^(\S+ (?:eager|compiled)) +loss ([0-9.]+ -> [0-9.]+), "
                           r"+[0-9.]+ steps/s", stdout, re.M))
    assert set(runs) == {"torch.nn eager", "fusedrnn eager", "torch.nn compiled",
                         "fusedrnn compiled"}, stdout
    for first, last in (map(float, r.split(" -> ")) for r in runs.values()):
        assert last < first - 0.3, stdout
    gaps = re.findall(r"max difference ([0-9.e+-]+)", stdout)
    assert len(gaps) == 3 and all(float(g) < 1e-3 for g in gaps), stdout
    assert "fusedrnn compiled over torch.nn compiled" in stdout, stdout


def test_docs_sections_code_runs():
    """The Python blocks of docs/api.md's sections on the layers, the network
    and the training helpers run; each asserts what it claims."""
    text = (ROOT / "docs" / "api.md").read_text()
    sections = text[text.index("## Layers: `fusedrnn.RNN`"):]
    blocks = re.findall(r"```python\n(.*?)```", sections, re.S)
    assert len(blocks) == 5
    for code in blocks:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, "docs/api.md", "exec"), {})
