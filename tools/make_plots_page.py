"""Write .dvc/plots_page.html: DVC's plots page with vega, vega-lite and vega-embed inline.

`dvc plots show` loads these three scripts from a CDN, so on an air-gapped machine its page is
blank. This page (set as `plots.html_template` in .dvc/config) carries them inline, at the
versions DVC's own page asks for (dvc_render/vega.py), each with its licence. Needs npm and
the npm registry; run it again only to change the versions:

    python tools/make_plots_page.py
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

# name, version: what DVC's own page loads (its specs are written for them)
PACKAGES = [
    ("vega", "5.20.2"),
    ("vega-lite", "5.2.0"),
    ("vega-embed", "6.18.2"),
]
PAGE = Path(__file__).resolve().parents[1] / ".dvc" / "plots_page.html"

TEMPLATE = """<!DOCTYPE html>
<!-- The page of `dvc plots show` with its scripts inline, for machines without internet
     (plots.html_template in .dvc/config). Made by tools/make_plots_page.py from the npm
     packages {versions}. DVC replaces the placeholders in braces. -->
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def script(folder: Path, name: str, version: str, integrity: str) -> str:
    code = (folder / "package" / "build" / f"{name}.min.js").read_text(encoding="utf-8")
    licence = (folder / "package" / "LICENSE").read_text(encoding="utf-8")
    for text in (code, licence):
        assert "</script" not in text.lower() and "*/" not in licence, name
        for placeholder in ("{scripts}", "{plot_divs}", "{refresh_tag}"):
            assert placeholder not in text, (name, placeholder)
    header = f"{name} {version} (npm, {integrity})\n\n{licence.strip()}"
    return f"    <script>/*!\n{header}\n*/\n{code}\n    </script>"


def main() -> None:
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in PACKAGES:
            packed = subprocess.run(
                ["npm", "pack", "--json", f"{name}@{version}"],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
            info = json.loads(packed.stdout)[0]
            folder = Path(tmp) / name
            with tarfile.open(Path(tmp) / info["filename"]) as archive:
                archive.extractall(folder, filter="data")
            scripts.append(script(folder, name, version, info["integrity"]))
    versions = ", ".join(f"{name} {version}" for name, version in PACKAGES)
    PAGE.write_text(TEMPLATE.format(versions=versions, scripts="\n".join(scripts)))
    print(f"wrote {PAGE} ({PAGE.stat().st_size // 1024} KiB): {versions}")


if __name__ == "__main__":
    main()
