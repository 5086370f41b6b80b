"""The static site: pages with their outputs and figures, explorers as their static figure, an index."""
import base64

import nbformat
import pytest

from badsad_lib.site import WIDGET_VIEW, build_site

PNG = base64.b64encode(bytes.fromhex(  # a 1 x 1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf0000000301010018dd8db00000000049454e44ae426082")).decode()


def _lesson(path, raises=False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson 09: A tiny lesson\n\nIt *draws* a figure and shows an explorer."),
                nbformat.v4.new_code_cell("import os\nprint('quick =', os.environ['BADSAD_QUICK'])"),
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()"),
                nbformat.v4.new_code_cell("from IPython.display import display\n"
                                          f"display({{{WIDGET_VIEW!r}: {{'model_id': 'x', 'version_major': 2, "
                                          f"'version_minor': 0}}, 'image/png': {PNG!r}, 'text/plain': 'explorer'}}, "
                                          "raw=True)")]
    if raises:
        nb.cells.append(nbformat.v4.new_code_cell("1 / 0"))
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {  # what a run with live widgets saves
        "state": {"x": {"model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
                        "model_module_version": "2.0.0", "state": {"value": 3}}}, "version_major": 2, "version_minor": 0}}
    nbformat.write(nb, path)
    return path


def test_the_site_has_each_page_with_its_figures_and_an_index(tmp_path):
    pytest.importorskip("nbconvert")
    lines = []
    index = build_site(tmp_path / "site", [_lesson(tmp_path / "09_tiny.ipynb")], timeout=120, progress=lines.append)
    page = (tmp_path / "site" / "09_tiny.html").read_text()
    executed = nbformat.read(tmp_path / "site" / "09_tiny.ipynb", as_version=4)
    assert "quick = 1" in executed.cells[1].outputs[0]["text"]
    assert "quick = 1" in page and page.count("data:image/png;base64") >= 2
    # no kernel behind the page, so no live widget (whose scripts would come from a CDN): the static figure shows
    assert f'type="{WIDGET_VIEW}"' not in page and "widget-state+json" not in page and "html-manager" not in page
    text = index.read_text()
    assert 'href="09_tiny.html"' in text and "Lesson 09: A tiny lesson" in text and "It draws a figure" in text
    assert lines == [lines[0]] and "09_tiny.html: 2 figures (1 explorers as their static figure)" in lines[0]


def test_a_notebook_that_raises_writes_no_page(tmp_path):
    pytest.importorskip("nbconvert")
    with pytest.raises(ValueError, match="did not run clean.*ZeroDivisionError"):
        build_site(tmp_path / "site", [_lesson(tmp_path / "10_broken.ipynb", raises=True)], timeout=120)
    assert not (tmp_path / "site" / "10_broken.html").exists() and not (tmp_path / "site" / "index.html").exists()
    with pytest.raises(ValueError, match="not a notebook file"):
        build_site(tmp_path / "site", [tmp_path / "missing.ipynb"])


def test_without_the_fallback_the_page_would_try_to_render_live_widgets(tmp_path):
    """The control for the test above: exported as it ran, the notebook asks for the widget manager."""
    nbconvert = pytest.importorskip("nbconvert")
    from badsad_lib.site import static_fallback

    nb = nbformat.read(_lesson(tmp_path / "09_tiny.ipynb"), as_version=4)
    nb.cells[3].outputs = [nbformat.v4.new_output("display_data", data={
        WIDGET_VIEW: {"model_id": "x", "version_major": 2, "version_minor": 0}, "image/png": PNG, "text/plain": "e"})]
    as_run = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(nb)[0]
    assert "widget-state+json" in as_run and f'type="{WIDGET_VIEW}"' in as_run
    assert static_fallback(nb) == 1
    page = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(nb)[0]
    assert "widget-state+json" not in page and "data:image/png;base64" in page


def test_a_page_reads_as_a_solved_lesson_without_markers_or_frozen_progress_bars():
    from badsad_lib.site import tidy_for_reading

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("def f(x):\n    # BEGIN SOLUTION: double it\n    return 2 * x\n    # END SOLUTION")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="train:  40%|####  | 4/10 [00:01<00:02, 3.1it/s]\r"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning: something real\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="12 it/s] is fine on stdout\n")]
    nb.cells = [cell]
    tidy_for_reading(nb)
    assert cell.source == "def f(x):\n    # double it\n    return 2 * x"
    assert [o["text"] for o in cell.outputs] == ["warning: something real\n", "12 it/s] is fine on stdout\n"]
