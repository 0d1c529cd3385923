"""The scripts stand on the package's entry layers: steps/ and local/ import phonerec.pipeline (the stages and a
step's command line), phonerec.inference (the model tools: the Python API the README shows) and phonerec.base
(errors, the output dir's lock, the config), never a layer between (the layers: pyproject.toml's importlinter
contract, checked by tools/run_tests.sh)."""

import ast

from conftest import REPO

ENTRY_LAYERS = ("phonerec.pipeline", "phonerec.inference", "phonerec.base")
# Kaldi's utils/validate_data_dir.sh: a tool on data dirs themselves, the data layer's own check.
TOOLS_ON_A_LAYER = {"steps/validate_data_dir.py": ("phonerec.data.data_dir",)}


def phonerec_imports(path):
    """The phonerec modules a script imports, wherever in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == "phonerec" or name.startswith("phonerec.")}
    return found


def test_steps_and_local_import_only_the_entry_layers():
    scripts = sorted([*REPO.glob("steps/*.py"), *REPO.glob("local/*/*.py")])
    assert len(scripts) > 15
    wrong = {}
    for script in scripts:
        name = str(script.relative_to(REPO))
        allowed = ENTRY_LAYERS + TOOLS_ON_A_LAYER.get(name, ())
        outside = sorted(
            m for m in phonerec_imports(script) if not any(m == a or m.startswith(a + ".") for a in allowed)
        )
        if outside:
            wrong[name] = outside
    assert wrong == {}


def test_an_import_from_a_layer_between_is_found(tmp_path):
    script = tmp_path / "step.py"
    script.write_text("import os\nfrom phonerec.pipeline import cli\n\ndef f():\n    import phonerec.training.loop\n")
    assert phonerec_imports(script) == {"phonerec.pipeline", "phonerec.training.loop"}
