"""Run one solution notebook in JupyterLab inside headless Chromium and report what a learner sees.

Not part of CI (it needs a browser). Needs Debian's Chromium (``apt-get install chromium``) and
``pip install -e ".[browser]"``. Usage::

    BADSAD_DATA=/abs/path/to/data python scripts/browser_check.py solutions/01_deepsad_basics.ipynb --out /tmp/browser

The notebook is copied to a temporary folder first, so JupyterLab's autosave never writes outputs
into the repository. The script starts JupyterLab, runs all cells through the Lab UI, counts
figures, rendered widgets and errors, moves a slider with the keyboard (``--slider``, ``--key``), checks that the
widget's figure changed, and saves screenshots to ``--out``. Exit status 1 if anything failed.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAB_SETTINGS = {  # every cell in the DOM (no virtual scrolling), no news pop-up
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}
PROGRESS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {done: cells.filter(c => c.model.executionCount !== null).length, total: cells.length,
          status: kernel ? kernel.status : 'none'};
}"""
REPORT_JS = """() => {
  const q = s => document.querySelectorAll(s).length;
  const text = [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.innerText).join('\\n');
  return {images: q('.jp-OutputArea-output img'), widget_views: q('.jp-OutputArea-output .jupyter-widgets.widget-slider, .jp-OutputArea-output .widget-button'),
          sliders: q('.jp-OutputArea-output .widget-slider'), errors: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] .jp-RenderedText, .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]'),
          error_texts: [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]')].map(e => e.innerText.slice(0, 400)),
          widget_problems: (text.match(/Error displaying widget|Loading widget|model not found/g) || []).length};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(folder: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab serving ``folder/notebooks``, its settings and log kept beside it in ``folder``."""
    settings = folder / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), BADSAD_QUICK=os.environ.get("BADSAD_QUICK", "1"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder / 'notebooks'}", "--LabApp.expose_app_in_browser=True", "--allow-root"]
    lab = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(folder / "lab.log", "w"))
    for _ in range(120):
        if lab.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            time.sleep(1)
    lab.terminate()
    raise RuntimeError(f"JupyterLab did not start; see {folder / 'lab.log'}")


def run_notebook(notebook: Path, out: Path, timeout_s: float, slider: int = 0, key: str = "ArrowRight") -> dict:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="badsad-browser-"))
    (folder / "notebooks").mkdir()
    shutil.copy(notebook, folder / "notebooks" / notebook.name)
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(folder, port, token)
    report = {"notebook": str(notebook)}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=120_000)
            start = time.time()
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            while True:
                time.sleep(2)
                progress = page.evaluate(PROGRESS_JS)
                finished = progress["done"] == progress["total"] and progress["status"] == "idle"
                stalled = progress["status"] == "idle" and time.time() - start > 20 and progress["done"] < progress["total"]
                if finished or stalled or time.time() - start > timeout_s:
                    break
            time.sleep(3)  # let the last outputs render
            report.update(progress, seconds=round(time.time() - start, 1))
            report.update(page.evaluate(REPORT_JS))
            page.screenshot(path=str(out / "last_screen.png"))
            figures = page.locator(".jp-OutputArea-output img")
            for i in range(figures.count()):
                figures.nth(i).scroll_into_view_if_needed()
                figures.nth(i).screenshot(path=str(out / f"figure_{i:02d}.png"))
            report["slider_changes_figure"] = move_slider(page, out, slider, key)
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    return report


def move_slider(page, out: Path, index: int = 0, key: str = "ArrowRight") -> bool | None:
    """Press ``key`` ten times on the ``index``-th slider; True if its widget's figure changed."""
    sliders = page.locator(".jp-OutputArea-output .widget-slider")
    if sliders.count() <= index:
        return None
    slider = sliders.nth(index)
    view = slider.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')]").first
    view.scroll_into_view_if_needed()
    image = view.locator("img").first
    before = image.get_attribute("src")
    view.screenshot(path=str(out / "widget_before.png"))
    handle = slider.locator("[role=slider], .noUi-handle, .ui-slider-handle").first
    handle.focus()
    for _ in range(10):
        page.keyboard.press(key)
    page.wait_for_timeout(4000)
    view.screenshot(path=str(out / "widget_after.png"))
    return image.get_attribute("src") != before


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, default=Path("browser-check"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds for running all cells")
    parser.add_argument("--slider", type=int, default=0, help="which slider to move (0 = the first)")
    parser.add_argument("--key", default="ArrowRight", help="key pressed ten times on it (ArrowLeft to go down)")
    args = parser.parse_args(argv)
    report = run_notebook(args.notebook.resolve(), args.out, args.timeout, args.slider, args.key)
    print(json.dumps(report, indent=2))
    ok = (report["done"] == report["total"] and not report["error_texts"] and report["widget_problems"] == 0
          and report["slider_changes_figure"] is not False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
