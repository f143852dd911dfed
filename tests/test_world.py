"""World options (Recipe.i2t_fact_p, t2i_sparse_p, t2i_view_p) and the RecA premise diagnostics
(geneval.evaluate_recon, geneval.prompt_gap). Every option is off by default and then changes nothing."""
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from torch import nn

from reca_nb.world import data
from reca_nb.evaluation import geneval
from reca_nb.world import shapes
from reca_nb.world import text
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import WORLD_FIELDS, Recipe, preset
from reca_nb.world.shapes import NUMBERS, PLURAL, RELATIONS, ShapeWorld

SEED = 970_000  # held out from the pools (>= 1_000_000) and the eval seeds


def _scenes(n=600, kind="random"):
    w = ShapeWorld(n, seed=SEED, kind=kind)
    return [w.scene(i) for i in range(n)]


# ----------------------------------------------------------------------------- I2T fact sentences

def _holds(sentence: str, objs) -> bool:
    """Check a fact sentence against the scene, independently of how it was written."""
    w = sentence.rstrip(" .").split()
    if w[:2] == ["there", "are"]:
        n = {v: k for k, v in NUMBERS.items()}[w[2]]
        shape = {v: k for k, v in PLURAL.items()}[w[3]]
        return sum(o.shape == shape for o in objs) == n
    if w[:3] == ["there", "is", "a"]:
        return any((o.color, o.shape) == (w[3], w[4]) for o in objs)
    assert w[0] == "the" and w[3] == "is"
    rel = next(r for r in RELATIONS if f" is {r} the " in sentence)
    a = [o for o in objs if (o.color, o.shape) == (w[1], w[2])]
    b = [o for o in objs if (o.color, o.shape) == tuple(sentence.split(f" {rel} the ")[1].rstrip(" .").split())]
    return len(a) == 1 and len(b) == 1 and shapes.Spec("position", ("x", "y"), relation=rel).satisfied_by(
        [shapes.Obj("x", "red", a[0].slot), shapes.Obj("y", "red", b[0].slot)])


def test_fact_sentences_are_true_use_the_eval_words_and_cover_every_kind():
    rng = np.random.default_rng(0)
    tok = text.tokenizer()
    kinds = set()
    for sc in _scenes():
        s = shapes.fact_sentence(sc.objects, rng)
        assert _holds(s, sc.objects), (s, sc.description)
        assert " and " not in s  # a caption stays readable by parse_description
        tok.encode(s)  # every word is already in the shared vocabulary: no model changes size
        kinds.add("relation" if s.split()[0] == "the" else s.split()[1])
    assert kinds == {"relation", "are", "is"}
    assert any(r in " ".join(shapes.fact_sentence(sc.objects, rng) for sc in _scenes(200))
               for r in ("left of", "above"))


def test_fact_captions_rate_truth_and_determinism():
    descs = [sc.description for sc in _scenes(2000)]
    caps = data.fact_captions(descs, 0.5, data_seed=3)
    with_fact = [c for c, d in zip(caps, descs) if c != d]
    assert 0.45 < len(with_fact) / len(caps) < 0.55
    for c, d in zip(caps, descs):
        assert c.startswith(d)
        assert shapes.parse_description(c) == shapes.parse_description(d)  # the I2T eval reads it the same
        if c != d:
            assert _holds(c[len(d) + 3:], shapes.parse_description(d))
    assert caps == data.fact_captions(descs, 0.5, data_seed=3)
    assert data.fact_captions(descs, 0.0) == descs


# ----------------------------------------------------------------------------- alt-text-like T2I prompts

def test_sparse_prompts_drop_rate_and_stay_true():
    n = 3000
    world = data.t2i_world(n, data_seed=2)
    scenes = [world.scene(i) for i in range(n)]
    sparse = data.sparse_prompts(n, 0.8, data_seed=2)
    droppable = [i for i, sc in enumerate(scenes) if sc.spec.category not in ("single_object", "two_object")]
    dropped = [i for i in droppable if sparse[i] != scenes[i].prompt]
    assert 0.77 < len(dropped) / len(droppable) < 0.83
    for i, sc in enumerate(scenes):
        if sc.spec.category in ("single_object", "two_object"):
            assert sparse[i] == sc.prompt
        words = set(sparse[i].split())
        if i in dropped:  # no relation, number or colour left
            assert not words & ({"left", "right", "above", "below"} | set(NUMBERS.values()) | set(shapes.COLORS))
            assert all(s in sparse[i] for s in sc.spec.shapes)  # the objects are still named
    assert data.sparse_prompts(n, 0.0, data_seed=2) == [sc.prompt for sc in scenes]


# ----------------------------------------------------------------------------- the second view

def test_render_jitter_scale_one_is_the_default_render():
    for sc in _scenes(20):
        a = np.asarray(shapes.render(sc, 32, jitter_seed=[1, 2]))
        assert np.array_equal(a, np.asarray(shapes.render(sc, 32, jitter_seed=[1, 2], jitter_scale=1.0)))


def test_views_show_the_same_scene_but_not_the_target_pixels():
    b = data.Batches(32, 64, 300, data_seed=4, seed=0)
    images, prompts, views, has_view = b.t2i_views(256, 0.25)
    assert has_view.shape == (256,) and views.shape == (int(has_view.sum()), 3, 32, 32)
    assert 0.15 < has_view.float().mean() < 0.35
    targets = images[has_view]
    diff = (views - targets).abs().amax(1)  # (k, S, S) per-pixel difference
    assert ((diff > 0.1).flatten(1).float().mean(1) > 0.02).all()  # another render: never the target's pixels
    assert diff.flatten(1).amax(1).min() > 0.5
    same = [a == b for a, b in zip(geneval.detect(views), geneval.detect(targets))]
    assert np.mean(same) >= 0.95  # ... of the same objects in the same cells
    # the rows without a view are the plain T2I batch of the same generator state
    b2 = data.Batches(32, 64, 300, data_seed=4, seed=0)
    im2, pr2 = b2.t2i(256)
    assert torch.equal(im2, images) and pr2 == prompts


def test_view_rows_go_through_the_und_route_and_the_mean_weights_samples():
    from reca_nb.train import Objective

    class Fake(nn.Module):
        def generation_loss(self, images, prompts, cond=None):
            return images.new_tensor(1.0 if cond is None else 3.0)

        def reca_loss(self, und, prompts, targets):
            assert und.shape[-1] == 16 and len(prompts) == len(targets)
            return self.generation_loss(targets, prompts, cond=und)

    obj = Objective(Fake())
    imgs = torch.zeros(4, 3, 32, 32)
    m = torch.tensor([True, False, False, False])
    out = obj({"t2i": (imgs, list("abcd"), torch.zeros(1, 3, 16, 16), m)})
    assert out["t2i"].item() == pytest.approx((3 + 1 + 1 + 1) / 4)
    assert obj({"t2i": (imgs, list("abcd"))})["t2i"].item() == 1.0


def test_pretrain_with_every_world_option_runs(tmp_path):
    from tests.toy_umm import ToyUMM
    from reca_nb.train import train

    # a pretrain recipe on the toy model, und views at the 16-px bottleneck Show-o VQ would use
    r = replace(preset("showo-vq", "pretrain"), arch="toy", und_res=16, steps=3, batch=8, n_images=32, n_t2i_pairs=16,
                i2t_fact_p=0.5, t2i_sparse_p=0.8, t2i_view_p=0.5, save_every=0, log_every=1, device="cpu")
    torch.manual_seed(0)
    hist = train(ToyUMM(), r, progress=False)
    assert len(hist) == 3 and all(np.isfinite(h["loss_t2i"]) for h in hist)


# ----------------------------------------------------------------------------- defaults change nothing

def test_world_options_default_off_and_keep_old_identities():
    r = preset("bagel", "pretrain")
    assert all(getattr(r, k) == v for k, v in WORLD_FIELDS.items())
    assert r.key() == {k: v for k, v in asdict(r).items() if k not in WORLD_FIELDS}
    on = replace(r, t2i_view_p=0.25)
    assert on.key()["t2i_view_p"] == 0.25 and "i2t_fact_p" not in on.key()
    for bad in (dict(i2t_fact_p=1.5), dict(t2i_sparse_p=-0.1), dict(view_jitter=-1.0)):
        with pytest.raises(ValueError):
            Recipe(**bad)


def test_default_batches_equal_batches_with_options_at_zero():
    a = data.Batches(32, 40, 12, data_seed=6, seed=1)
    b = data.Batches(32, 40, 12, data_seed=6, seed=1, i2t_fact_p=0.0, t2i_sparse_p=0.0)
    for _ in range(2):
        for x, y in ((a.i2t(8), b.i2t(8)), (a.t2i(8), b.t2i(8)), (a.reca(8), b.reca(8))):
            assert torch.equal(x[0], y[0]) and x[1] == y[1]
    c = data.Batches(32, 40, 12, data_seed=6, seed=1, i2t_fact_p=1.0)
    im, caps = c.i2t(8)
    assert all(" . " in t for t in caps)


def test_resume_check_accepts_checkpoints_from_before_the_world_options():
    from reca_nb.checkpoint import check_recipe

    r = preset("bagel", "reca")
    old = json.loads(json.dumps(r.key()))  # what a checkpoint written before these fields holds
    check_recipe(old, r)
    with pytest.raises(ValueError, match="t2i_view_p"):
        check_recipe(old, replace(r, t2i_view_p=0.25))


def test_reproduce_fingerprints_ignore_unset_world_options():
    from reca_nb import reproduce

    cfg = reproduce.ReproduceConfig(preset="ci")
    job = reproduce.Job("bagel", "reca", 0)
    stages = reproduce.arm_stages("bagel", "reca", cfg, 0)
    assert all(set(WORLD_FIELDS).isdisjoint(s.key()) for s in stages)
    assert reproduce.fingerprint(job, cfg) == reproduce.fingerprint(job, cfg)


# ----------------------------------------------------------------------------- premise diagnostics

class _PromptReader(nn.Module):
    """generation_loss = noise + (1 - weight * [prompt is the image's own prompt]); `weight` 0 ignores text."""

    def __init__(self, weight: float):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.weight, self.image_size = weight, 32
        w = ShapeWorld(64, seed=10_000, kind="prompted")
        self.own = {w[i]["image"].numpy().tobytes(): w.scene(i).prompt for i in range(64)}

    def generation_loss(self, images, prompts, cond=None):
        noise = torch.rand(len(images))  # the global RNG: prompt_gap must give both passes the same draws
        hit = torch.tensor([self.own[x.numpy().tobytes()] == p for x, p in zip(images, prompts)])
        return (noise + 1 - self.weight * hit.float()).mean()


def test_prompt_gap_is_zero_without_text_use_and_positive_with_it():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    blind = geneval.prompt_gap(_PromptReader(0.0), n=64, draws=3, batch_size=16)
    assert blind["gap"] == pytest.approx(0.0, abs=1e-9)  # same noise for true and shuffled prompts
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    reader = geneval.prompt_gap(_PromptReader(0.5), n=64, draws=3, batch_size=16)
    assert reader["gap"] > 0.1 and reader["loss_shuffled"] > reader["loss_true"] and reader["draws"] == 3


class _Reconstructor(nn.Module):
    """reconstruct() returns the ground-truth renders of the eval scenes (oracle) or black images."""

    def __init__(self, oracle: bool):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.oracle, self.image_size, self.seen = oracle, 32, []
        self.renders = ShapeWorld(60, seed=10_000, size=32, kind="prompted").images()

    def reconstruct(self, und, templates, generator=None):
        assert isinstance(generator, torch.Generator) and not self.training and len(templates) == len(und)
        start = sum(len(s) for s in self.seen)
        self.seen.append(und)
        return self.renders[start:start + len(und)] if self.oracle else torch.zeros(len(und), 3, 32, 32)


def test_evaluate_recon_scores_reconstructions_of_the_eval_scenes():
    m = _Reconstructor(True)
    r = geneval.evaluate_recon(m, und_res=16, n_per_category=10, batch_size=25, progress=False)
    assert [tuple(x.shape) for x in m.seen] == [(25, 3, 16, 16), (25, 3, 16, 16), (10, 3, 16, 16)]
    assert r["spec"] >= 0.98 and r["exact"] >= 0.98 and r["n"] == 60 and m.training
    black = geneval.evaluate_recon(_Reconstructor(False), und_res=16, n_per_category=10, progress=False)
    assert black["spec"] == 0.0 and black["exact"] == 0.0 and 0.0 < black["cell"] < 1.0  # empty cells count


def test_premise_cli_measures_a_base(tmp_path):
    from reca_nb.models import registry
    from reca_nb.reproduce import premise

    torch.manual_seed(0)
    registry.build("bagel").save(tmp_path / "bagel.safetensors")
    out = tmp_path / "gate.json"
    r = premise.main(["--arch=bagel", f"--ckpt={tmp_path / 'bagel.safetensors'}", "--eval_per_category=1",
                      "--i2t_n=2", "--gap_n=8", "--gap_draws=1", f"--out={out}"])
    assert json.loads(out.read_text())["recon"] == r["recon"]
    assert r["recon"]["und_res"] == 16 and r["recon"]["n"] == 6 and r["t2i"]["counts"]["position"] == 1
    assert set(r["prompt_gap"]) >= {"gap", "loss_true", "loss_shuffled"}
    with pytest.raises(ValueError, match="gap_n"):
        premise.main(["--gap_m=3"])


def test_premise_arms_differ_only_in_their_loss_terms():
    from reca_nb.reproduce.premise import PremiseConfig, arm_recipe
    from reca_nb.reproduce import ReproduceConfig, reca_recipe

    cfg = PremiseConfig(arch="bagel", seed=2, i2t_fact_p=0.5, t2i_sparse_p=0.8)
    reca = arm_recipe(replace(cfg, arm="reca"))
    t2i = arm_recipe(replace(cfg, arm="t2i"))
    both = arm_recipe(replace(cfg, arm="reca_t2i", lambda_t2i=0.5))
    shipped = reca_recipe("bagel", ReproduceConfig(device="cpu"))
    assert reca.active_terms == ("reca",) and t2i.active_terms == ("t2i",) and both.active_terms == ("reca", "t2i")
    assert both.lambda_t2i == 0.5 and reca.seed == t2i.seed == 2 and t2i.t2i_view_p == 0.0
    for r in (reca, t2i, both):  # the same steps, optimiser and trainable parameters as reproduce's RecA job
        assert (r.steps, r.lr, r.batch, r.freeze, r.und_res, r.prompts) == (
            shipped.steps, shipped.lr, shipped.batch, shipped.freeze, shipped.und_res, shipped.prompts)
        assert (r.i2t_fact_p, r.t2i_sparse_p) == (0.5, 0.8)
    assert arm_recipe(replace(cfg, arm="reca", steps=20)).steps == 20


def test_premise_trajectory_starts_at_the_base(tmp_path):
    from reca_nb.models import registry
    from reca_nb.reproduce import premise

    torch.manual_seed(0)
    registry.build("bagel").save(tmp_path / "bagel.safetensors")
    r = premise.main(["--arch=bagel", f"--ckpt={tmp_path / 'bagel.safetensors'}", "--arm=reca", "--steps=4",
                      "--track_every=2", "--eval_per_category=1", "--i2t_n=2", "--gap_n=8", "--gap_draws=1"])
    assert [t["step"] for t in r["trajectory"]] == [0, 2, 4]
    assert r["recon"] == r["trajectory"][-1]["recon"]  # the final weights are measured once
    assert len(r["scorer"]) == 64  # the detector's sha256: which scorer these numbers come from


def _write_runs(root, arm_values: dict):
    for arm, values in arm_values.items():
        for seed, v in enumerate(values):
            t2i = {c: v for c in ("overall", "single_object", "two_object", "counting", "colors", "position",
                                  "color_attr")}
            t2i["position"] = 0.5  # one category where every arm ties
            (root / f"x-{arm}-s{seed}.json").write_text(json.dumps({"t2i": t2i}))


@pytest.mark.parametrize("reca, expected", [((0.60, 0.62, 0.61), "reproduced"),
                                            ((0.30, 0.31, 0.29), "not reproduced")])
def test_premise_verdict_applies_claim_1s_rule_both_ways(tmp_path, reca, expected):
    from reca_nb.reproduce import premise

    _write_runs(tmp_path, {"base": (0.45, 0.46, 0.44), "t2i": (0.47, 0.45, 0.46), "reca": reca})
    rows = premise.verdict_table(tmp_path / "x")
    by = {(r["metric"], r["b"]): r for r in rows}
    assert [r["metric"] for r in rows[:2]] == ["overall", "overall"] and len(rows) == 14
    assert by["overall", "base"]["verdict"] == by["overall", "t2i"]["verdict"] == expected
    assert by["overall", "base"]["diff"] == pytest.approx(sum(reca) / 3 - 0.45)
    assert by["position", "base"]["verdict"] == "inconclusive"  # a tie is never a verdict
    assert "| overall | reca vs base |" in premise.verdict_markdown(rows)


def test_premise_verdict_cli_on_the_recorded_runs_and_missing_files(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "reca_nb.reproduce.premise", "--verdict=results/premise_runs/b"],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    overall = [line for line in r.stdout.splitlines() if line.startswith("| overall |")]
    assert len(overall) == 2 and all(line.endswith("| 3+3 | not reproduced |") for line in overall)
    r = subprocess.run([sys.executable, "-m", "reca_nb.reproduce.premise", f"--verdict={tmp_path / 'none'}"],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith("error: no finished runs")
    assert len(r.stderr.strip().splitlines()) == 1
