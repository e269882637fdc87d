"""The documentation holds together: every relative link leads to a file, every page of docs/ is
in the README's map, and the README's first CPU run is a valid small run (no pipeline runs)."""

import re
import shlex

import yaml
from conftest import REPO_ROOT

from transfer_pipeline import params as params_module
from transfer_pipeline.expected_time import expected_on_two_cpus
from transfer_pipeline.params import declared_params, validate, warnings_about

README = REPO_ROOT / "README.md"
PAGES = sorted((REPO_ROOT / "docs").glob("*.md"))
# [text](target): the target up to a space or ")"; code spans are removed first.
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _relative_links(page):
    for target in LINK.findall(CODE.sub("", page.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not https:, mailto: ...
            yield target


def test_every_relative_link_leads_to_a_file():
    pages = [README, REPO_ROOT / "BENCHMARKS.md", *REPO_ROOT.glob("*/**/README.md"), *PAGES]
    broken = [
        f"{page.relative_to(REPO_ROOT)}: {target}"
        for page in pages
        if not any(part.startswith(".") for part in page.relative_to(REPO_ROOT).parts)
        for target in _relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not broken, broken


def test_every_docs_page_is_in_the_readme_map():
    linked = {target for target in _relative_links(README) if target.startswith("docs/")}
    assert {f"docs/{page.name}" for page in PAGES} <= linked


def test_the_first_cpu_run_is_a_small_run_with_the_readmes_expected_time(monkeypatch):
    """The command of "A first result on a CPU": valid params, a note in the report that it is
    a small run, and the features stage's estimate matching the README's minutes."""
    monkeypatch.chdir(REPO_ROOT)
    section = README.read_text().split("## A first result on a CPU")[1].split("\n## ")[0]
    command = section.split("```bash\n")[1].split("```")[0]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:5] == ["dvc", "exp", "run", "-n", "first-look"]
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for flag, override in zip(words[5::2], words[6::2]):
        assert flag == "-S", words
        key, value = override.split("=", 1)
        *sections, leaf = key.split(".")
        node = raw
        for name in sections:
            node = node[name]
        node[leaf] = yaml.safe_load(value)
    params = validate(raw)
    (note,) = warnings_about(params_module._only(params, declared_params("report")))
    assert note.startswith("a small run, not the seed's recipe")
    sizes = {split: params["data"][f"{split}_size"] for split in ("train", "val", "test")}
    setting = {key: params["model"][key] for key in ("backbone", "image_size")}
    line = expected_on_two_cpus({**setting, "backend": "tensorflow"}, "float32", sizes)
    minutes = re.search(r"about (\d+) min for these ([\d,]+) images, then about (\d+) min", line)
    features, images, epoch = minutes.groups()
    assert f"features {features} minutes ({images} images)" in " ".join(section.split())
    assert f"the fine-tuning epoch {epoch}" in " ".join(section.split())
