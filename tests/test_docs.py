"""The documentation stays true to the repository: in README.md and docs/*.md every relative
link and every repository path named in backticks exists, the README keeps its two commands and
its length, every config key of the plug-in is documented, and no example writes into docs/."""

import glob
import os
import re

import pytest
from detectron2.config import get_cfg

from retina_plugin import add_retina_plugin_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = "README.md"
DOCS = sorted(
    os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
)
DOC_FILES = [README, *DOCS]
README_MAX_LINES = 200

# What a path named in the docs starts with: the repository's top-level folders and files. Fixed
# names, so that a deleted folder still counts as one (its paths then fail); plus whatever else
# sits at the top, except build outputs and caches.
TOP_LEVEL = {
    "configs", "docs", "retina_plugin", "scripts", "sweeps", "tests", "tools",
    "train_net.py", "setup.py", "Makefile", "LICENSE", "README.md", "constraints.txt",
    "pytest.ini", "ruff.toml", ".ci",
}  # fmt: skip
NOT_REPOSITORY = {"output", "datasets", "build", "dist"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)


def top_level_names() -> set:
    present = {
        name
        for name in os.listdir(REPO_ROOT)
        if not name.startswith(".") and not name.endswith(".egg-info") and name != "__pycache__"
    }
    return (TOP_LEVEL | present) - NOT_REPOSITORY


def read(doc: str) -> str:
    with open(os.path.join(REPO_ROOT, doc), encoding="utf-8") as f:
        return f.read()


def expand_braces(pattern: str) -> list:
    """`a/{b,c}.md` -> [`a/b.md`, `a/c.md`] (nested and repeated braces too)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for option in match.group(1).split(",") for p in expand_braces(head + option + tail)]


def repository_paths(code: str, top_level: set) -> list:
    """
    The repository paths in a piece of code (an inline code span or a fenced block): the tokens
    (split at whitespace, '=', quotes, parentheses and square brackets) that are a top-level file
    or start with a top-level name and '/' (a bare folder name is a word, not a path), with
    punctuation around them removed. Tokens with
    placeholders (`<...>`, `...`, `$VAR`, `~`) are left out; `path::test` counts as `path`.
    """
    paths = []
    for token in re.split(r"[\s=\"'()\[\]]+", code):
        if any(mark in token for mark in ("<", ">", "...", "$", "~")):
            continue
        token = token.strip(",;:").split("::")[0].rstrip(".")
        first = token.split("/")[0]
        is_file_name = "." in first or first in ("Makefile", "LICENSE")
        if first in top_level and ("/" in token or is_file_name):
            paths.append(token)
    return paths


def code_pieces(text: str) -> list:
    """Fenced blocks' contents and inline code spans (outside the fenced blocks)."""
    blocks = FENCE.findall(text)
    return blocks + INLINE_CODE.findall(FENCE.sub("", text))


def prose(text: str) -> str:
    """The text without fenced blocks, with inline code spans replaced by a placeholder."""
    return INLINE_CODE.sub("CODE", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(doc: str) -> set:
    anchors, seen = set(), {}
    for _, heading in HEADING.findall(FENCE.sub("", read(doc))):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def exists(path: str) -> bool:
    return any(glob.glob(os.path.join(REPO_ROOT, p)) for p in expand_braces(path))


def test_path_extraction_is_precise():
    top = {"configs", "tools", "retina_plugin", "docs", "tests", "train_net.py"}
    command = (
        "python tools/loss_cdf.py --config-file configs/quickstart.yaml --output=output/a.png "
        "MODEL.WEIGHTS output/quickstart/model_final.pth"
    )
    assert repository_paths(command, top) == ["tools/loss_cdf.py", "configs/quickstart.yaml"]
    assert repository_paths("retina_plugin.load_config('configs/x.yaml')", top) == [
        "configs/x.yaml"
    ]
    assert repository_paths("retina_plugin.engine.SafePredictor", top) == []
    assert repository_paths('load_config("configs/x.yaml",', top) == ["configs/x.yaml"]
    assert repository_paths("tests/test_x.py::test_y", top) == ["tests/test_x.py"]
    assert repository_paths("train_net.py", top) == ["train_net.py"]
    assert repository_paths("docs/ablations/<grid>_results.md and docs/...", top) == []
    assert repository_paths("data/train.json my_config.yaml tools", top) == []
    assert expand_braces("docs/{a,b}.{md,csv}") == [
        "docs/a.md",
        "docs/a.csv",
        "docs/b.md",
        "docs/b.csv",
    ]
    assert github_anchor("Missing `detectron2._C`") == "missing-detectron2_c"
    assert github_anchor("TRAINING: many processes, failures") == "training-many-processes-failures"


@pytest.mark.parametrize("doc", DOC_FILES)
def test_relative_links_exist(doc):
    missing = []
    for target in LINK.findall(prose(read(doc))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(os.path.join(REPO_ROOT, linked)):
            missing.append(target)
        elif fragment and linked.endswith(".md") and fragment not in anchors_of(linked):
            missing.append(f"{target} (no heading '#{fragment}' in {linked})")
    assert not missing, f"{doc} links to what does not exist: {missing}"


@pytest.mark.parametrize("doc", DOC_FILES)
def test_paths_in_backticks_exist(doc):
    top_level = top_level_names()
    named = {p for code in code_pieces(read(doc)) for p in repository_paths(code, top_level)}
    missing = sorted(p for p in named if not exists(p))
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_readme_holds_the_two_commands_and_stays_short():
    text = read(README)
    for command in ("make setup", "make test", "make test-slurm"):
        assert re.search(rf"^{command}\b", text, re.MULTILINE), f"README lost `{command}`"
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= README_MAX_LINES, f"README has {lines} lines; move detail into docs/"


def test_readme_indexes_every_doc():
    linked = {
        os.path.normpath(target.partition("#")[0]) for target in LINK.findall(prose(read(README)))
    }
    assert sorted(set(DOCS) - linked) == []


def test_every_config_key_is_documented():
    def leaves(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    detectron2_keys = set(leaves(get_cfg()))
    plugin_keys = set(leaves(add_retina_plugin_config(get_cfg()))) - detectron2_keys
    documented = set(INLINE_CODE.findall(read(os.path.join("docs", "CONFIG.md"))))
    assert plugin_keys, "add_retina_plugin_config added no key?"
    assert sorted(plugin_keys - documented) == []


def test_setup_script_names_readme_sections_that_exist():
    with open(os.path.join(REPO_ROOT, "scripts", "setup_env.sh"), encoding="utf-8") as f:
        sections = re.findall(r"README[^']*section '([^']+)'", f.read())
    headings = {heading for _, heading in HEADING.findall(FENCE.sub("", read(README)))}
    assert sections and set(sections) <= headings


def test_no_example_writes_into_docs():
    writes = re.compile(r"--output(?:-dir)?[ =]+['\"]?docs\b")
    offenders = [
        (doc, line.strip())
        for doc in DOC_FILES
        for block in code_pieces(read(doc))
        for line in block.splitlines()
        if writes.search(line)
    ]
    assert offenders == []


def test_the_paper_is_cited_directly():
    files = DOC_FILES + [
        os.path.relpath(p, REPO_ROOT)
        for folder in ("configs", "sweeps")
        for p in glob.glob(os.path.join(REPO_ROOT, folder, "**", "*.yaml"), recursive=True)
    ]
    assert [f for f in files if "PAPER.md" in read(f)] == []
