"""reca_nb.evaluation.geneval_real on tiny random Mask2Former + CLIP built offline: prompts, subset, the colour crop,
generate -> folder -> score, intervals, the CLI on a folder (subprocess). Nothing is downloaded."""
import dataclasses
from dataclasses import replace
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from reca_nb.evaluation import geneval_real as ge
from reca_nb.evaluation.geneval_detect import GREY, load_scorer
from reca_nb.evaluation.geneval_rules import CLASSNAMES, COLORS, TASKS, Detection
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import preset

pytestmark = pytest.mark.usefixtures("own_home_one_thread")


@pytest.fixture(scope="module")
def scorer():
    s = load_scorer(tiny=True)
    # a random detector sees nothing above 0.3; make "cup" win every query so the rules have objects to read
    with torch.no_grad():
        s.detector.class_predictor.bias[CLASSNAMES.index("cup")] = 20.0
    return s


@pytest.fixture
def metadata_file(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ge.EXAMPLE_METADATA) + "\n")
    return path


def test_read_metadata_and_stratified_subset(metadata_file, tmp_path):
    records = ge.read_metadata(metadata_file)
    assert records == list(ge.EXAMPLE_METADATA)
    one = ge.subset(records, n_per_task=1, seed=0)
    assert sorted(r["tag"] for _, r in one) == sorted(TASKS)  # one of each task
    assert [i for i, _ in one] == sorted(i for i, _ in one) and all(records[i] is r for i, r in one)
    assert ge.subset(records, 1, seed=0) == one  # a fixed seed draws the same prompts
    draws = {tuple(i for i, _ in ge.subset(records, 1, seed=s)) for s in range(20)}
    assert len(draws) > 1  # another seed, another draw
    assert len(ge.subset(records, 0)) == len(ge.subset(records, 5)) == len(records)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "single_object", "prompt": "x", "include": [{"class": "cup", "count": 1}]}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        ge.read_metadata(bad)


def test_official_metadata_is_never_fetched_offline_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline"):
        ge.official_metadata(tmp_path / "missing.jsonl")
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in ge.EXAMPLE_METADATA))
    with pytest.raises(ValueError, match="not GenEval's metadata"):
        ge.official_metadata(small)
    assert sum(ge.TASK_SIZES.values()) == 553 and ge.METADATA_COMMIT in ge.METADATA_URL


def test_tiny_scorer_detects_and_applies_the_task_thresholds(scorer):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    found = scorer.detect(img)
    cups = found["cup"]
    assert all(isinstance(d, Detection) and d.mask.shape == (32, 32) and d.mask.any() for d in cups)
    assert all(0.3 < d.score < 0.9 for d in cups)  # class prob ~1 times the mean mask probability
    single, counting = ge.EXAMPLE_METADATA[0], ge.EXAMPLE_METADATA[4]
    assert scorer.judge(img, single)["correct"]
    verdict = scorer.judge(img, counting)  # counting keeps only scores above 0.9: no cup is left
    assert not verdict["correct"] and verdict["reason"] == "expected cup>=3, found 0"
    colour = scorer.judge(img, {"tag": "colors", "prompt": "a red cup",
                                "include": [{"class": "cup", "count": 1, "color": "red"}]})
    assert isinstance(colour["correct"], bool) and colour["details"]["cup"]


def test_colour_crop_is_the_mask_on_grey_cut_to_the_box(scorer, monkeypatch):
    seen = []
    real = scorer.clip_processor

    def spy(images, **kw):
        seen.extend(images)
        return real(images=images, **kw)

    monkeypatch.setattr(scorer, "clip_processor", spy)
    img = Image.new("RGB", (32, 32), (200, 10, 10))
    mask = np.zeros((32, 32), bool)
    mask[4:12, 6:10] = True
    mask[4, 6] = False  # a corner outside the mask, inside the box
    colors = scorer.colors(img, [Detection((6.0, 4.0, 10.0, 12.0), 0.9, mask)], "cup")
    assert len(colors) == 1 and colors[0] in COLORS
    (crop,) = seen
    px = np.asarray(crop)
    assert crop.size == (4, 8)  # width, height of the box
    assert tuple(px[0, 0]) == GREY and tuple(px[1, 1]) == (200, 10, 10)


def test_generate_write_read_score_and_memory_equals_folder(scorer, tmp_path):
    from reca_nb.models.real import janus_pro

    model = janus_pro.load(tiny=True)
    prompts = ge.subset(list(ge.EXAMPLE_METADATA), n_per_task=1, seed=0)
    images = ge.generate(model, prompts, images_per_prompt=2, seed=3, progress=False)
    again = ge.generate(model, prompts, images_per_prompt=2, seed=3, progress=False)
    assert all(torch.equal(images[i], again[i]) for i in images)  # the same seeds give the same pictures
    assert all(v.shape == (2, 3, 32, 32) for v in images.values())
    ge.write_folder(tmp_path / "imgs", prompts, images)
    items = ge.read_folder(tmp_path / "imgs")
    assert [(i, r) for i, r, _ in items] == prompts and all(len(p) == 2 for *_, p in items)
    from_disk = ge.score(scorer, items, progress=False)
    from_memory = ge.score(scorer, [(i, r, images[i]) for i, r in prompts], progress=False)
    assert from_disk == from_memory and len(from_disk) == 12
    s = ge.summarize(from_disk, n_boot=200)
    assert set(s["scores"]) == set(TASKS) | {"overall"} and s["n_images"] == 12
    assert s["interval"][0] <= s["scores"]["overall"] <= s["interval"][1]


def test_read_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ge.read_folder(tmp_path / "nope")
    (tmp_path / "00000" / "samples").mkdir(parents=True)
    with pytest.raises(ValueError, match="metadata.jsonl"):
        ge.read_folder(tmp_path)


def _rows(correct: dict):
    """{(tag, index): [bools per image]} -> result rows."""
    return [{"tag": t, "index": i, "image": k, "correct": c} for (t, i), cs in correct.items() for k, c in
            enumerate(cs)]


def test_summary_and_paired_comparison_intervals():
    before = _rows({("single_object", i): [i % 2 == 0] * 2 for i in range(10)}
                   | {("position", 10 + i): [False, False] for i in range(10)})
    after = _rows({("single_object", i): [True, True] for i in range(10)}
                  | {("position", 10 + i): [i < 3, False] for i in range(10)})
    sb = ge.summarize(before, n_boot=500)
    assert sb["scores"] == {"single_object": 0.5, "position": 0.0, "overall": 0.25}
    assert sb["interval"][0] < 0.25 < sb["interval"][1]
    c = ge.compare(before, after, n_boot=500)
    assert c["delta"]["overall"] == pytest.approx((1.0 + 0.15) / 2 - 0.25)
    assert 0 < c["interval"][0] < c["delta"]["overall"] < c["interval"][1]
    same = ge.compare(before, before, n_boot=100)
    assert same["delta"]["overall"] == 0 and same["interval"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same prompts"):
        ge.compare(before, after[:-2] + _rows({("position", 99): [True, True]}))
    table = ge.markdown({"base": sb, "RecA": c["after"]})
    assert "| single_object | 0.500 | 1.000 |" in table and "**overall**" in table


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model"):
        ge.GenEvalConfig(model="dalle")
    with pytest.raises(ValueError, match="images_per_prompt"):
        ge.GenEvalConfig(images_per_prompt=0)
    with pytest.raises(ValueError, match="Unknown config key 'n_per_tsk'.*Did you mean 'n_per_task'"):
        ge.main(["--n_per_tsk=3"])


def test_cli_help_lists_every_key(capsys):
    with pytest.raises(SystemExit) as e:
        ge.main(["--help"])
    printed = capsys.readouterr().out
    assert e.value.code == 0 and printed.startswith("usage: python -m reca_nb.evaluation.geneval_real")
    assert all(f"--{f.name}=" in printed for f in dataclasses.fields(ge.GenEvalConfig))


def test_eval_extra_is_in_dev():
    tomllib = pytest.importorskip("tomllib")

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras["eval"]) <= set(extras["dev"]) and any(r.startswith("scipy") for r in extras["eval"])


@pytest.mark.slow
def test_cli_generates_then_scores_the_folder_in_a_subprocess(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "reca_nb.evaluation.geneval_real", "--tiny", "--progress=False", "--threads=1"]
    r = subprocess.run(run + ["--model=janus-pro", "--n_per_task=1", "--images_per_prompt=1",
                              f"--out={tmp_path / 'gen'}"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    pngs = sorted((tmp_path / "gen" / "images").glob("*/samples/*.png"))
    assert len(pngs) == 6
    r = subprocess.run(run + [f"--images={tmp_path / 'gen' / 'images'}", f"--out={tmp_path / 'score'}"],
                       capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "**overall**" in r.stdout and "written:" in r.stdout
    first = json.loads((tmp_path / "gen" / "geneval.json").read_text())
    second = json.loads((tmp_path / "score" / "geneval.json").read_text())
    assert second["results"] == first["results"]  # scoring the saved folder gives the same verdicts
    assert "numbers mean nothing" in (tmp_path / "score" / "geneval.md").read_text() and second["tiny"]


def test_load_generator_puts_the_adapters_on_the_base(tmp_path):
    from reca_nb.models.real import janus_pro
    from reca_nb.world.folder import ImageFolder
    from reca_nb.train import train

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            photos / f"p{i}.png")
    model = janus_pro.load(tiny=True)
    rec = replace(preset("janus-pro"), steps=2, batch=2, lambda_i2t=0.0, i2t_ratio=0.0, lr=1e-2, warmup=1, log_every=1,
                            device="cpu")
    train(model, rec, out_dir=tmp_path / "run", data=ImageFolder(photos).batches, progress=False)
    trained = model.state_dict()
    for adapters in (tmp_path / "run", tmp_path / "run" / "adapters.safetensors"):  # run folder or file
        got = ge.load_generator(ge.GenEvalConfig(tiny=True, adapters=str(adapters))).state_dict()
        for k, v in got.items():
            torch.testing.assert_close(v, trained[k], rtol=1e-5, atol=1e-6)
    base = ge.load_generator(ge.GenEvalConfig(tiny=True)).state_dict()
    assert any(not torch.equal(base[k], trained[k]) for k in base)


def test_openuni_real_generates_the_subset():
    model = ge.load_generator(ge.GenEvalConfig(model="openuni-real", tiny=True))
    prompts = ge.subset(list(ge.EXAMPLE_METADATA), n_per_task=1, seed=0)[:2]
    images = ge.generate(model, prompts, images_per_prompt=2, seed=0, progress=False)
    assert [v.shape for v in images.values()] == [(2, 3, 32, 32)] * 2
