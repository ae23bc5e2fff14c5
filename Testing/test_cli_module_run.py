"""`python -m malenia` is the `malenia` command (a Slicer Python or a virtual environment without the script on PATH)."""

import subprocess
import sys

from malenia import __version__


def test_python_dash_m_malenia_runs_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "malenia", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"malenia {__version__}"
    bad = subprocess.run([sys.executable, "-m", "malenia", "segment", str(tmp_path / "missing.nrrd"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and bad.stderr.startswith("malenia segment: error:") and not (tmp_path / "out").exists()
