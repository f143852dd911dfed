"""JupyterLab as a learner meets it, driven by headless Chromium (`make test-browser`).

Starts JupyterLab on 127.0.0.1 the way `make lab` does (working copies from tools/lab_workspace.py, the
kernel's own inline matplotlib backend), runs notebooks 00, 02 and 06 top to bottom through the Run menu and
checks what is on the screen: figures are pictures, the collapse explorer is ONE widget whose picture changes
when a slider moves and when a toggle is clicked, no console error beyond the offline Colab badge, and the
repository is as clean afterwards as before. Screenshots go to $RECA_NB_SHOTS (default build/browser/).

Chromium is the Debian package (`apt-get install chromium`); Playwright comes from pip and is pointed at it
through `executable_path` (`playwright install` would download a browser of its own, which fails offline).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RECA_NB_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("RECA_NB_SHOTS", REPO / "build" / "browser"))
RUN_TIMEOUT_S = int(os.environ.get("RECA_NB_BROWSER_TIMEOUT", 1200))
TOKEN = "reca-nb-browser-test"

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test-browser)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


class lab_url(str):
    git_status_before = ""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on the learner's working copies; stopped (with its kernels) afterwards."""
    home = tmp_path_factory.mktemp("reca_nb_home")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend, as in Lab
    env.update(RECA_NB_HOME=str(home), HF_HUB_OFFLINE="1", JUPYTER_CONFIG_DIR=str(home / "jupyter"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"))
    # JupyterLab renders only the cells in view by default; render them all so every output can be checked
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    subprocess.run([sys.executable, str(REPO / "tools" / "lab_workspace.py")], env=env, check=True)
    port = _free_port()
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", f"--port={port}", "--no-browser",
         "--allow-root", f"--ServerApp.root_dir={home / 'lab'}", f"--IdentityProvider.token={TOKEN}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    lab_url.git_status_before = _git_status()
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError((home / "lab.log").read_text())
                time.sleep(1)
        else:
            raise RuntimeError("JupyterLab did not start within 120 s:\n" + (home / "lab.log").read_text())
        yield lab_url(url)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})

        def on_console(msg):
            # the Colab badge is an external image: offline, its request fails, and that is the only excuse
            if msg.type == "error" and "127.0.0.1" in (msg.location or {}).get("url", "127.0.0.1"):
                errors.append(msg.text)
        pg.on("console", on_console)
        pg.lab_url, pg.console_errors = lab, errors
        yield pg
        browser.close()


def dismiss_dialogs(page, name: str):
    """Lab sometimes asks something on its first start (a modal dialog): record it, take its default answer."""
    for _ in range(3):
        dialog = page.locator(".jp-Dialog")
        if not dialog.count():
            return
        print(f"{name}: dialog: {dialog.first.inner_text()!r}")
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}_dialog.png"))
        dialog.first.locator(".jp-mod-accept").first.click()
        time.sleep(1)


def run_notebook(page, name: str):
    """Open `name`, Run > Run All Cells, wait until every code cell has an execution count (or an error)."""
    # a workspace of its own, reset: only this notebook is open (Lab would otherwise restore earlier tabs)
    page.goto(f"{page.lab_url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={TOKEN}&reset")
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    dismiss_dialogs(page, name)
    started = lambda: any(re.search(r"\[(\*|\d+)\]", t)  # noqa: E731
                          for t in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts())
    for _ in range(3):  # a click that lands while Lab is still settling can be lost: check, and click again
        dismiss_dialogs(page, name)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        for _ in range(20):
            if started():
                break
            time.sleep(1)
        if started():
            break
        page.keyboard.press("Escape")
    assert started(), f"Run All Cells did not start {name}"
    deadline = time.time() + RUN_TIMEOUT_S
    while time.time() < deadline:
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        if prompts and all(re.search(r"\[\d+\]", t) for t in prompts):
            break  # every code cell ran (a cell that raised gets its number too; Run All stops after it)
        if any("Traceback" in t for t in page.locator(".jp-OutputArea-output").all_inner_texts()):
            break
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}_progress.png"))  # the latest state, for a person
        time.sleep(2)
    page.screenshot(path=str(SHOTS / f"{Path(name).stem}_page.png"), full_page=False)  # where it stopped
    tracebacks = [t for t in page.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback" in t]
    assert not tracebacks, f"{name} raised:\n{tracebacks[0][-2000:]}"
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert all(re.search(r"\[\d+\]", t) for t in prompts), f"{name} did not finish in {RUN_TIMEOUT_S} s"


def assert_pictures(page, name: str, at_least: int):
    outputs = page.locator(".jp-OutputArea-output")
    texts = outputs.all_inner_texts()
    bare = [t for t in texts if re.search(r"<Figure size [^>]*>", t)]
    assert not bare, f"{name}: figures printed as text: {bare[:3]}"
    pictures = page.locator(".jp-RenderedImage img")
    assert pictures.count() >= at_least, f"{name}: {pictures.count()} pictures, expected >= {at_least}"
    for k in range(pictures.count()):  # decoded and laid out, not a broken image
        assert pictures.nth(k).evaluate("img => img.complete && img.naturalWidth > 100")


def shot(page, locator, name: str) -> Path:
    path = SHOTS / name
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    return path


def test_00_shape_world_figures(page):
    run_notebook(page, "00_shape_world.ipynb")
    assert_pictures(page, "00", at_least=3)
    shot(page, page.locator(".jp-RenderedImage").first, "00_first_figure.png")


def test_02_explorer_renders_once_and_reacts(page):
    run_notebook(page, "02_information_bottleneck.ipynb")
    assert_pictures(page, "02", at_least=3)
    shot(page, page.locator(".jp-RenderedImage").first, "02_collapse_figure.png")
    explorer = page.locator(".jp-OutputArea-output .widget-image")
    assert explorer.count() == 1, f"the explorer is shown {explorer.count()} times"
    box = explorer.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
    img_src = lambda: explorer.get_attribute("src")  # noqa: E731
    before = img_src()
    assert before and before.startswith("blob:") or before.startswith("data:image/png")
    shot(page, box, "02_explorer_before.png")

    # move the "und res" slider one step (keyboard on its handle: what a mouse drag does, without pixel maths)
    handle = box.locator(".widget-hslider, .widget-slider").first.locator(".noUi-handle, .ui-slider-handle").first
    handle.focus()
    handle.press("ArrowRight")
    page.wait_for_function("([el, old]) => el.getAttribute('src') !== old",
                           arg=[explorer.element_handle(), before], timeout=30_000)
    after_slider = img_src()
    shot(page, box, "02_explorer_after_slider.png")

    box.locator(".widget-toggle-button", has_text="single").click()
    page.wait_for_function("([el, old]) => el.getAttribute('src') !== old",
                           arg=[explorer.element_handle(), after_slider], timeout=30_000)
    shot(page, box, "02_explorer_after_toggle.png")
    assert len({before, after_slider, img_src()}) == 3


def test_06_side_by_side_figures(page):
    run_notebook(page, "06_side_by_side.ipynb")
    assert_pictures(page, "06", at_least=2)
    shot(page, page.locator(".jp-RenderedImage").first, "06_first_figure.png")


def test_08_the_premise_figures(page):
    run_notebook(page, "08_the_premise.ipynb")
    assert_pictures(page, "08", at_least=3)  # live curves, reconstructions, recorded curves
    shot(page, page.locator(".jp-RenderedImage").nth(2), "08_recorded_premise.png")
    table = page.locator(".jp-OutputArea-output table", has_text="reca vs base")
    assert table.count() == 1, "the verdict table is not rendered"
    shot(page, table, "08_verdict_table.png")


def test_no_console_errors(page):
    assert not page.console_errors, page.console_errors[:5]


def test_repository_stays_clean(page, lab):
    """Running every notebook above autosaved working copies only: nothing in the repository changed."""
    assert _git_status() == lab.git_status_before


def test_one_entry_per_notebook(lab):
    import json

    with urllib.request.urlopen(f"{lab}/api/contents?token={TOKEN}") as r:
        names = sorted(c["name"] for c in json.load(r)["content"])
    stems = sorted({n.rsplit(".", 1)[0] for n in names})
    assert names == [s + ".ipynb" for s in stems], names
