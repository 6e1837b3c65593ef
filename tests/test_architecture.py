"""House rules that keep the layers apart."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_does_not_import_orchestration_tracking_or_versioning():
    code = ("import sys, importlib, pkgutil, unlearn_ops\n"
            "for m in pkgutil.walk_packages(unlearn_ops.__path__, 'unlearn_ops.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(n for n in ('prefect', 'mlflow', 'dvc') if n in sys.modules)\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"unlearn_ops pulled in: {out.stdout.strip()}"


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "site-packages" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, f"unsafe torch.load: {offenders}"
