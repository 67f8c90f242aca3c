"""README.md and docs/: short enough to read, every link leads somewhere, every command's flags exist,
and docs/arguments.md is the parser's."""

import glob
import os
import re
import shlex

import pytest

from ernie_m_xnli.setup.arguments import arguments_markdown, build_parser

from conftest import REPO_ROOT

PAGES = ["README.md", *sorted(os.path.relpath(path, REPO_ROOT) for path in glob.glob(f"{REPO_ROOT}/docs/*.md"))]
SCRIPTS = (
    "run_classifier.py",
    "compare.py",
    "aggregate.py",
    "benchmark.py",
    "infer_static.py",
    "sanity_check.py",
    "benchmarks/fidelity.py",
    "benchmarks.hf_finetune_peer",
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def read(page):
    return open(os.path.join(REPO_ROOT, page), encoding="utf-8").read()


def anchors(page):
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", read(page), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", text, re.M)
    }


def commands(page):
    """The shell commands of a page's bash blocks that start a script of this project: (line, argv)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", read(page), re.S):
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', block.replace("\\\n", " "), re.M))
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for name, value in {**variables, "seed": "1", "dropout": "off", "HOME": "/home/user"}.items():
                line = line.replace(f"${name}", value)
            words = shlex.split(line) if line and not line.startswith(("#", "for ", "done", "do")) else []
            script = next((word for word in words if word.endswith(SCRIPTS) or word in SCRIPTS), None)
            if script:
                found.append((line, script, words[words.index(script) + 1 :]))
    return found


def test_readme_is_read_in_five_minutes():
    assert len(read("README.md").splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES)
def test_every_link_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(read(page)):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        assert os.path.exists(os.path.join(REPO_ROOT, linked)), f"{page}: link to {target}: no {linked}"
        if anchor:
            assert anchor in anchors(linked), f"{page}: link to {target}: {linked} has no heading #{anchor}"


def flags_of(script):
    """The flags a script's parser defines, read from its source (the transformers peer imports torch,
    which CI has not); run_classifier.py's from its parser."""
    if script == "run_classifier.py":
        return {flag for action in build_parser()._actions for flag in action.option_strings}
    path = script.replace(".", "/") + ".py" if not script.endswith(".py") else script
    sources = [read(path)]  # and the benchmarks' shared argument groups it imports
    sources += [
        read(f"benchmarks/{name}.py") for name in re.findall(r"^from benchmarks\.(\w+) import", sources[0], re.M)
    ]
    return {flag for source in sources for flag in re.findall(r'add_argument\(\s*"(--\w+)"', source)} | {"--help"}


@pytest.mark.parametrize("page", PAGES)
def test_every_command_uses_flags_its_script_has(page):
    for line, script, arguments in commands(page):
        name = next(s for s in SCRIPTS if script.endswith(s) or script == s)
        unknown = {word.split("=")[0] for word in arguments if word.startswith("--")} - flags_of(name)
        assert not unknown, f"{page}: {line}: {name} has no {', '.join(sorted(unknown))}"
        if name == "run_classifier.py":  # types, choices and required arguments too
            build_parser().parse_args(arguments)


def test_the_pages_hold_commands_of_every_kind():
    scripts = {script.rsplit("/", 1)[-1] for page in PAGES for _, script, _ in commands(page)}
    assert {"run_classifier.py", "compare.py", "aggregate.py", "fidelity.py", "benchmark.py"} <= scripts


def test_the_arguments_page_is_the_parsers():
    assert read("docs/arguments.md") == arguments_markdown(), (
        "docs/arguments.md is stale: python -m ernie_m_xnli.setup.arguments > docs/arguments.md"
    )
    documented = set(re.findall(r"^\| `(--\w+)`", read("docs/arguments.md"), re.M))
    assert documented == {flag for action in build_parser()._actions for flag in action.option_strings[:1]} - {"-h"}


def test_the_code_map_names_every_module():
    code_map = read("docs/code-map.md")
    modules = [
        name
        for pattern in ("*.py", "benchmarks/*.py", "ernie_m_xnli/**/*.py")
        for name in glob.glob(pattern, root_dir=REPO_ROOT, recursive=True)
        if not name.endswith("__init__.py")
    ]
    unnamed = [name for name in modules if not re.search(rf"(^|\s){re.escape(os.path.basename(name))}\s", code_map)]
    assert not unnamed, f"docs/code-map.md does not name {unnamed}"
