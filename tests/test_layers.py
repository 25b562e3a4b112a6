"""The library's layers: an import only ever points down data -> nn -> solvers -> models -> train -> course."""

import ast
from pathlib import Path

import recursionlab

ORDER = ["data", "nn", "solvers", "models", "train", "course"]
PACKAGE = Path(recursionlab.__file__).parent


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_lower_layers_never_import_upper_ones():
    bad = []
    for layer in ORDER:
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "recursionlab" and len(parts) > 1 and parts[1] in ORDER:
                    if ORDER.index(parts[1]) > ORDER.index(layer):
                        bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    for name in _imports(PACKAGE / "profiles.py"):
        if name.startswith("recursionlab."):
            bad.append(f"profiles.py imports {name}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, recursionlab; print(any(m.startswith('matplotlib') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", "import recursionlab should not pull in plotting libraries"
