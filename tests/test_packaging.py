"""The package installs from a built wheel too: `harness.encodings` and `harness.models` come
from the folders `encodings/` and `models/` without colliding with the standard library."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_lists_and_builds(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), "-q"], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel), "-q"],
                   check=True, capture_output=True, timeout=300)
    code = (
        "import harness, harness.encodings as e, harness.models as m, encodings.utf_8;"
        "assert harness.__file__.startswith(%r), harness.__file__;"
        "assert len(e.known_names()) >= 9;"
        "from harness.presets import load_preset; cfg = m.ViTConfig.from_dict(load_preset('model', 'tiny'));"
        "import torch; print(m.build_model(cfg, 'rope_golden')(torch.zeros(1, 3, 16, 16)).shape)"
    ) % str(target)
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "torch.Size([1, 10])" in r.stdout
