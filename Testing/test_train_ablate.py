"""`malenia ablate` trains the requested variants on the same data and budget and tabulates what it measured."""

import json
import subprocess
import sys
from pathlib import Path

from train_helpers import make_tiny_dataset, tiny_config

REPO = Path(__file__).resolve().parent.parent


def test_ablate_two_variants(tmp_path):
    make_tiny_dataset(tmp_path / "ds", n_cases=3)
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_config().to_dict()))
    cmd = [sys.executable, "-m", "malenia.cli", "ablate", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "abl"),
           "--config", str(tmp_path / "tiny.json"), "--steps", "3", "--variants", "baseline,s3",
           "--eval", f"{tmp_path / 'ds'}:test", "--threads", "1", "--progress", "none"]
    res = subprocess.run(cmd, cwd=REPO, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": ""},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    rows = {r["variant"]: r for r in table["variants"]}
    assert set(rows) == {"baseline", "s3"}
    # The baseline is single-scale, single-positive with type-only reports; its model stores the report rows.
    assert rows["baseline"]["changes"] == {"multi_scale_alignment": False, "multi_positive": False}
    assert (tmp_path / "abl" / "baseline" / "model" / "report_rows.safetensors").is_file()
    assert not (tmp_path / "abl" / "s3" / "model" / "report_rows.safetensors").exists()
    cfg = json.loads((tmp_path / "abl" / "baseline" / "model" / "config.json").read_text())
    assert cfg["multi_positive"] is False and cfg["multi_scale_alignment"] is False
    for r in rows.values():
        seen = r["results"][f"ds:test"]["seen"]
        assert 0.0 <= seen["dsc"] <= 1.0
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert md.splitlines()[0].startswith("| variant |") and "| baseline |" in md and "| s3 |" in md
