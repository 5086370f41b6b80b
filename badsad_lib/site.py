"""The course as a static site you can read before you run it: ``badsad site --out DIR``.

Every solution notebook is run top to bottom in a fresh kernel in quick mode (``grading.execute_quick``),
exported to one self-contained HTML page with its outputs (figures inlined as PNG) and kept beside it as an
executed ``.ipynb`` (which GitHub and nbviewer render), and listed on an
``index.html`` with its title, opening paragraph and the commit it was built from. There is no kernel
behind a static page, so an explorer's live widget is dropped from each output that also carries the
static figure the explorer draws (``widgets``' display bundles always do): the page shows that figure.
Any folder that serves files can host the result (GitHub Pages, Read the Docs, a course server).
"""
from __future__ import annotations

import html
import re
import time
from pathlib import Path

from .grading import SOLUTIONS
from .io import ensure_output_dir, write_text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def static_fallback(nb) -> int:
    """Drop the live widget from every output of ``nb`` that also has a static image (in place); returns how
    many were replaced, and removes the notebook's saved widget state."""
    replaced = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data and "image/png" in data:
                del data[WIDGET_VIEW]
                replaced += 1
    nb.metadata.pop("widgets", None)
    return replaced


_MARKER = re.compile(r"^(?P<indent>\s*)# (?:BEGIN SOLUTION(?::\s*(?P<what>.*))?|END SOLUTION)\s*$")


def tidy_for_reading(nb) -> None:
    """What a reader of a page needs, in place: the solution markers become the hint they carry (as a comment) or
    go, and stderr output made only of progress bars (tqdm's "it/s]" frames, frozen mid-way on a page) goes."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = []
        for line in cell.source.splitlines():
            m = _MARKER.match(line)
            if m is None:
                lines.append(line)
            elif m["what"]:
                lines.append(f"{m['indent']}# {m['what']}")
        cell.source = "\n".join(lines)
        cell.outputs = [o for o in cell.get("outputs", []) if not (
            o.get("output_type") == "stream" and o.get("name") == "stderr" and
            all("it/s]" in part or not part.strip() for part in re.split(r"[\r\n]", o.get("text", ""))))]


def _title_and_summary(nb, fallback: str) -> tuple[str, str]:
    """The first markdown heading, and the first paragraph after it (plain text, at most 300 characters)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.strip().splitlines()
            if lines and lines[0].startswith("#"):
                rest = "\n".join(lines[1:]).strip().split("\n\n")[0]
                plain = re.sub(r"[*_`$]|\[([^\]]*)\]\([^)]*\)", r"\1", rest).replace("\n", " ")
                return lines[0].lstrip("# ").strip(), plain[:300] + ("..." if len(plain) > 300 else "")
    return fallback, ""


def build_page(notebook, out: Path, timeout: int = 1200) -> dict:
    """Run ``notebook`` in quick mode and write ``out/<its name>.html``; returns its index entry. ValueError
    naming the notebook and the cell when a cell raises (a solution must run clean)."""
    from .grading import _nbclient, execute_quick

    nbformat, _ = _nbclient()
    try:
        from nbclient.exceptions import CellExecutionError
        from nbconvert import HTMLExporter
    except ImportError as err:
        raise ValueError(f"the site is exported with nbconvert ({err.name} is missing): pip install nbconvert, "
                         f"or the course's site extra") from err
    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    try:
        execute_quick(nb, notebook.resolve().parent, timeout, allow_errors=False)
    except CellExecutionError as err:
        cell = next((i for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.get("output_type") == "error"),
                    "?")
        raise ValueError(f"{notebook} did not run clean, so no page was written: cell {cell} raised "
                         f"{err.ename}: {err.evalue}") from None
    widgets = static_fallback(nb)
    tidy_for_reading(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    write_text(out / notebook.name, nbformat.writes(nb) + "\n")  # with outputs: GitHub and nbviewer render it too
    page = write_text(out / f"{notebook.stem}.html", body)
    title, summary = _title_and_summary(nb, notebook.stem)
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    return {"page": page.name, "title": title, "summary": summary, "figures": figures,
            "static_widgets": widgets, "seconds": round(time.perf_counter() - start, 1)}


def build_site(out, notebooks=None, timeout: int = 1200, progress=print) -> Path:
    """Run every notebook (default: the course's solutions, in lesson order) and write its page and
    ``out/index.html``; returns the index's path. ``progress(line)`` hears one line per page."""
    from .provenance import commit

    out = ensure_output_dir(out)
    notebooks = sorted(SOLUTIONS.glob("*.ipynb")) if notebooks is None else [Path(n) for n in notebooks]
    if not notebooks:
        raise ValueError(f"no notebooks to build: {SOLUTIONS} holds none (run from a clone of the course)")
    missing = [str(n) for n in notebooks if not n.is_file()]
    if missing:
        raise ValueError(f"not a notebook file: {', '.join(missing)}")
    entries = []
    for notebook in notebooks:
        entries.append(build_page(notebook, out, timeout))
        e = entries[-1]
        progress(f"{e['page']}: {e['figures']} figures ({e['static_widgets']} explorers as their static "
                 f"figure), {e['seconds']:.0f} s")
    items = "\n".join(f'<li><a href="{html.escape(e["page"])}">{html.escape(e["title"])}</a>'
                      f'<p>{html.escape(e["summary"])}</p></li>' for e in entries)
    index = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>BadSAD: backdoor attacks on deep anomaly detectors</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
li{{margin-bottom:1.2rem}} a{{font-size:1.15rem}} p{{margin:.3rem 0}} footer{{color:#555;font-size:.9rem}}</style>
</head><body>
<h1>BadSAD: backdoor attacks on deep anomaly detectors</h1>
<p>The course's lessons, solved and run top to bottom in quick mode, with every output and figure. The
explorers' sliders show the figure they draw at their starting position; open a notebook to move them.</p>
<ol>
{items}
</ol>
<footer>Built {time.strftime("%Y-%m-%d")} from commit {html.escape(commit()[:10])} with <code>badsad site</code>
(quick settings: the numbers are those a learner's quick run prints).</footer>
</body></html>
"""
    return write_text(out / "index.html", index)
