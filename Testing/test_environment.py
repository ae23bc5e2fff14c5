import importlib.util
import subprocess
import sys


def test_torchvision_is_absent():
    # The PyPI torchvision breaks beside the CPU torch and makes transformers fail on BERT models.
    assert importlib.util.find_spec("torchvision") is None
    assert importlib.util.find_spec("timm") is None


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "malenia.cli", "--help"], capture_output=True, text=True, check=True)
    assert "bench" in out.stdout
