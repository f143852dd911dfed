"""tools/lab_workspace.py: `make lab` works on copies outside the repository, one entry per notebook."""
import json
import sys

import nbformat
import pytest

from reca_nb.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import lab_workspace  # noqa: E402

SOURCES = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))[:2]


def test_copies_are_plain_notebooks_without_pairing(tmp_path):
    lab_workspace.sync(tmp_path, sources=SOURCES)
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == [p.name for p in SOURCES]  # no paired .py: one entry per notebook in the file browser
    nb = nbformat.read(tmp_path / SOURCES[0].name, as_version=4)
    assert "jupytext" not in nb.metadata  # saving in Lab writes no .py
    assert [c.source for c in nb.cells] == [c.source for c in nbformat.read(SOURCES[0], as_version=4).cells]


def test_saved_work_is_kept_and_untouched_copies_follow_the_repository(tmp_path):
    lab_workspace.sync(tmp_path, sources=SOURCES)
    mine, untouched = (tmp_path / p.name for p in SOURCES)
    mine.write_text(mine.read_text().replace('"outputs": []', '"outputs": [ ]', 1))  # the learner saved
    state = json.loads((tmp_path / lab_workspace.STATE).read_text())
    for entry in state.values():
        entry["source"] = "an older repository version"
    (tmp_path / lab_workspace.STATE).write_text(json.dumps(state))
    before = untouched.read_bytes()
    untouched.write_text("stale")
    state[untouched.name]["copy"] = lab_workspace._digest(b"stale")
    (tmp_path / lab_workspace.STATE).write_text(json.dumps(state))

    notes = lab_workspace.sync(tmp_path, sources=SOURCES)
    assert untouched.read_bytes() == before  # refreshed: the learner never saved it
    assert '"outputs": [ ]' in mine.read_text()  # kept: the learner's own work
    assert len(notes) == 1 and mine.name in notes[0] and "lab-reset" in notes[0]
    lab_workspace.sync(tmp_path, reset=True, sources=SOURCES)
    assert '"outputs": [ ]' not in mine.read_text()


def test_refuses_a_folder_inside_the_repository():
    with pytest.raises(SystemExit, match="outside the repository"):
        lab_workspace.sync(REPO_ROOT / "notebooks" / "lab", sources=SOURCES)


def test_news_prompt_is_answered_and_other_overrides_are_kept(tmp_path):
    settings = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}))
    assert lab_workspace.quiet_news(tmp_path) == settings
    data = json.loads(settings.read_text())
    assert data["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    assert data["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
