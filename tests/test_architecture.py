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


DOCS = ("README.md", "docs/architecture.md", "docs/verification.md")
NUMBERS = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}


def test_architecture_page_names_the_real_stages_flows_and_functions():
    import importlib

    import yaml

    doc = (ROOT / "docs" / "architecture.md").read_text()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert f"has {NUMBERS.get(len(stages), len(stages))} stages" in doc
    assert not [s for s in stages if f"| `{s}` |" not in doc], "a dvc.yaml stage missing from docs/architecture.md"
    code = "\n".join(p.read_text() for d in ("flows", "tasks") for p in (ROOT / d).glob("*.py"))
    flows = re.findall(r'@flow\(name="([^"]+)"', code)
    assert len(flows) > 10 and not [f for f in flows if f"`{f}`" not in doc], "a flow missing from the page"
    life = doc.split("## A request's life")[1].split("\n## ")[0]
    named = re.findall(r"`((?:flows|tasks|unlearn_ops)\.[\w.]+)`", life)
    assert {"flows.deletion_batch.run_chain", "flows.deletion_batch.register_candidate",
            "flows.deletion_batch.apply_and_retire"} <= set(named)
    for dotted in named:  # each names a function (or class attribute) that exists
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)


def test_docs_link_only_inside_the_repository():
    for name in DOCS:
        text = (ROOT / name).read_text()
        assert "../" not in text, f"{name} points outside the repository"
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if not target.startswith(("http://", "https://")):
                assert ((ROOT / name).parent / target).exists(), f"{name}: broken link {target}"
