"""How the code is laid out: nothing patches Detectron2 at run time, the command lines are thin,
and nothing imports them."""

import ast
import glob
import importlib
import os

import pytest

from tests.utils import REPO_ROOT

PRODUCTION_FILES = sorted(
    glob.glob(os.path.join(REPO_ROOT, "retina_plugin", "**", "*.py"), recursive=True)
    + glob.glob(os.path.join(REPO_ROOT, "tools", "*.py"))
    + [os.path.join(REPO_ROOT, "train_net.py")]
)


def _relative(path):
    return os.path.relpath(path, REPO_ROOT)


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _imported_names(tree):
    """{local name: imported dotted name} of every import in `tree`."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _is_detectron2_module(dotted: str) -> bool:
    if not dotted.startswith("detectron2"):
        return False
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False  # a class or function, not a module


def _patches(path):
    """Lines of `path` that import unittest.mock or assign to an attribute of a Detectron2
    module (``module.name = ...`` or ``setattr(module, ...)``)."""
    tree = _tree(path)
    imported = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            modules += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m == "unittest.mock" or m.startswith("unittest.mock") for m in modules) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "unittest"
                and any(a.name == "mock" for a in node.names)
            ):
                found.append((node.lineno, "imports unittest.mock"))
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                dotted = imported.get(target.value.id, "")
                if _is_detectron2_module(dotted):
                    found.append((node.lineno, f"assigns {dotted}.{target.attr}"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and _is_detectron2_module(imported.get(node.args[0].id, ""))
        ):
            found.append((node.lineno, "setattr on a Detectron2 module"))
    return found


@pytest.mark.parametrize("path", PRODUCTION_FILES, ids=_relative)
def test_nothing_patches_detectron2(path):
    assert _patches(path) == []


def test_the_patch_finder_finds_patches(tmp_path):
    path = tmp_path / "patching.py"
    path.write_text(
        "from unittest import mock\n"
        "from detectron2.engine import defaults\n"
        "import detectron2.checkpoint.detection_checkpoint as dc\n"
        "defaults.AMPTrainer = object\n"
        "setattr(dc, 'pickle', None)\n"
        "from detectron2.engine import DefaultTrainer\n"
        "DefaultTrainer.x = 1\n"  # a class attribute of a subclassable class: not a module
    )
    assert _patches(str(path)) == [
        (1, "imports unittest.mock"),
        (4, "assigns detectron2.engine.defaults.AMPTrainer"),
        (5, "setattr on a Detectron2 module"),
    ]


@pytest.mark.parametrize("path", PRODUCTION_FILES, ids=_relative)
def test_nothing_imports_train_net_or_tools(path):
    imported = set(_imported_names(_tree(path)).values())
    assert not {
        n for n in imported if n == "train_net" or n.split(".")[0] in ("train_net", "tools")
    }


def test_train_net_is_a_thin_script():
    with open(os.path.join(REPO_ROOT, "train_net.py")) as f:
        assert len(f.readlines()) <= 80


def test_tools_is_a_folder_of_thin_scripts():
    """tools/ holds command lines over the package, not a package of its own."""
    assert not os.path.exists(os.path.join(REPO_ROOT, "tools", "__init__.py"))
    scripts = sorted(glob.glob(os.path.join(REPO_ROOT, "tools", "*.py")))
    assert scripts
    lengths = {}
    for path in scripts:
        with open(path, encoding="utf-8") as f:
            lengths[_relative(path)] = len(f.readlines())
    assert {path: n for path, n in lengths.items() if n > 150} == {}
