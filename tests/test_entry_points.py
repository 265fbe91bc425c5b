"""The command lines print no FutureWarning of Detectron2's and fvcore's use of torch.jit.script
(deprecated in torch 2.14), and silence nothing else: only those two imports, only in the entry
points, not in the library."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from tests.utils import REPO_ROOT

ENTRY_POINTS = ["train_net.py"] + sorted(
    os.path.relpath(path, REPO_ROOT) for path in glob.glob(os.path.join(REPO_ROOT, "tools", "*.py"))
)
MESSAGE = "`torch.jit.script` is deprecated"
QUIET_IMPORTS = ["detectron2.modeling.box_regression", "fvcore.nn.focal_loss"]


def _python(*argv, code=None):
    command = [sys.executable, *(["-c", code] if code else argv)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_train_net_help_prints_nothing_on_stderr():
    result = _python("train_net.py", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "--config-file" in result.stdout


def test_the_library_itself_still_warns_and_so_does_later_code(tmp_path):
    """The filter is the entry points' own: importing the library warns (twice, from
    Detectron2 and fvcore), and a torch.jit.script call after an entry point's block still
    warns."""
    imported = _python(code="import retina_plugin")
    assert imported.stderr.count(f"FutureWarning: {MESSAGE}") == 2, imported.stderr

    with open(os.path.join(REPO_ROOT, "train_net.py"), encoding="utf-8") as f:
        source = f.read()
    block = source[source.index("import warnings") : source.index("from detectron2.engine")]
    script = tmp_path / "later.py"  # TorchScript reads the function's source from its file
    script.write_text(
        block + "import torch\n\n\ndef f(x):\n    return x + 1\n\n\ntorch.jit.script(f)\n"
    )
    later = _python(str(script))
    assert later.returncode == 0, later.stderr
    assert later.stderr.count(f"FutureWarning: {MESSAGE}") == 1, later.stderr


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_silences_exactly_those_imports_first(path):
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        body = ast.parse(f.read()).body
    statements = [
        node
        for node in body
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    ]
    first, block = statements[0], statements[1]
    assert isinstance(first, ast.Import) and [a.name for a in first.names] == ["warnings"]
    assert isinstance(block, ast.With)
    assert ast.unparse(block.items[0]) == "warnings.catch_warnings()"
    assert ast.unparse(block.body[0]) == (
        f"warnings.filterwarnings('ignore', '{MESSAGE}', FutureWarning)"
    )
    imported = [alias.name for node in block.body[1:] for alias in node.names]
    assert imported == QUIET_IMPORTS
    # No other warnings filter anywhere in the file.
    source = ast.unparse(ast.Module(body=statements[2:], type_ignores=[]))
    assert "filterwarnings" not in source and "simplefilter" not in source


def test_library_sets_no_filter_for_that_warning():
    for path in glob.glob(os.path.join(REPO_ROOT, "retina_plugin", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            assert "jit.script` is deprecated" not in f.read(), path
