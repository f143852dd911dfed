"""GenEval-mini: scorer acceptance on held-out seeds (never used by fit_scorer), rules, chance, I2T, table."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reca_nb.evaluation import geneval
from reca_nb.world import shapes
from reca_nb.paths import DATA_DIR
from reca_nb.world.shapes import CATEGORIES, Obj, ShapeWorld

SEED = 950_000  # held out: fit_scorer trains on seeds >= 7_000_000
N_PER_CAT = 25


@pytest.fixture(scope="module")
def prompts():
    return geneval.geneval_prompts(N_PER_CAT, seed=SEED)


@pytest.fixture(scope="module")
def renders():
    n = len(CATEGORIES) * N_PER_CAT
    return {s: ShapeWorld(n, seed=SEED, size=s).images() for s in (32, 64)}


@pytest.fixture(scope="module")
def chance(prompts):
    return geneval.chance_t2i(prompts, n_random=200)


def _blur(x, sigma):
    t = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).repeat(3, 1)  # (3, 9)
    x = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="reflect"), k[:, None, None, :], groups=3)
    return F.conv2d(F.pad(x, (0, 0, 4, 4), mode="reflect"), k[:, None, :, None], groups=3)


# ----------------------------------------------------------------------------- pure logic

def test_class_ids_round_trip():
    seen = set()
    for c in shapes.COLOR_NAMES:
        for s in shapes.SHAPES:
            o = Obj(s, c, 2)
            k = geneval.class_of(o)
            assert 1 <= k < geneval.N_CLASSES and geneval.obj_of(k, 2) == o
            seen.add(k)
    assert len(seen) == geneval.N_CLASSES - 1 and geneval.obj_of(0, 1) is None
    red = Obj("circle", "red", 3)
    assert geneval.slot_labels([red]) == [0, 0, 0, geneval.class_of(red)]


def test_geneval_prompts_are_balanced_deterministic_and_match_shapeworld(prompts):
    assert len(prompts) == 6 * N_PER_CAT
    cats = [s.spec.category for s in prompts]
    assert all(cats.count(c) == N_PER_CAT for c in CATEGORIES)
    assert prompts == geneval.geneval_prompts(N_PER_CAT, seed=SEED)
    assert prompts != geneval.geneval_prompts(N_PER_CAT, seed=SEED + 1)
    ds = ShapeWorld(len(prompts), seed=SEED)
    assert all(ds.scene(i) == s and ds[i]["prompt"] == s.prompt for i, s in enumerate(prompts[:12]))
    assert all(s.spec.satisfied_by(s.objects) for s in prompts)


def test_chance_matches_the_analytic_single_object_rate(prompts):
    # random_scene: n ~ U{1..4} objects, each shape uniform over 3 -> P(some object is the named shape)
    p = 1 - np.mean([(2 / 3) ** n for n in range(1, 5)])  # = 0.599
    c = geneval.chance_t2i(prompts, n_random=3000)
    assert abs(c["single_object"] - p) < 0.03
    assert c == geneval.chance_t2i(prompts, n_random=3000)  # deterministic
    assert 0.1 < c["overall"] < 0.45
    assert c["counts"] == {k: N_PER_CAT for k in CATEGORIES}


def test_score_i2t():
    ds = ShapeWorld(60, seed=SEED + 7, kind="random")
    scenes = [ds.scene(i) for i in range(60)]
    truth = [s.description for s in scenes]
    r = geneval.score_i2t(truth, scenes)
    assert r == {"exact": 1.0, "slot_acc": 1.0, "color_acc": 1.0, "shape_acc": 1.0, "n": 60}
    shuffled = geneval.score_i2t(truth[1:] + truth[:1], scenes)
    assert shuffled["exact"] < 0.2 and shuffled["slot_acc"] < 0.7 and shuffled["color_acc"] < 0.5
    empty = geneval.score_i2t([""] * 60, scenes)
    n_empty = sum(4 - len(s.objects) for s in scenes)
    assert empty["slot_acc"] == pytest.approx(n_empty / 240) and empty["color_acc"] == 0.0
    # one object with the wrong colour: shape right, colour wrong, scene wrong
    one = [Obj("circle", "red", 0), Obj("square", "blue", 3)]
    r = geneval.score_i2t(["red circle top left and green square bottom right"], [one])
    assert r["exact"] == 0.0 and r["slot_acc"] == 0.75 and r["color_acc"] == 0.5 and r["shape_acc"] == 1.0
    with pytest.raises(ValueError, match="captions"):
        geneval.score_i2t(["x"], [one, one])


def test_format_table():
    base = {"overall": 0.5, **{c: 0.5 for c in CATEGORIES}}
    md = geneval.format_table({"base": base, "reca": {"t2i": {"overall": 0.75, "position": 0.75}}})
    lines = md.splitlines()
    assert lines[0] == ("| Model | Single obj. | Two obj. | Counting | Colors | Position | Color attr. "
                        "| Overall |")
    assert lines[2] == "| base | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 |"
    assert lines[3] == "| reca | – | – | – | – | 0.75 | – | 0.75 |"


def test_missing_weights_error_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit_scorer"):
        geneval.load_scorer(tmp_path / "nope.safetensors")


def test_random_scenes_cannot_be_scored_as_prompts():
    ds = ShapeWorld(2, seed=1, kind="random")
    with pytest.raises(ValueError, match="spec"):
        geneval.score_t2i(ds.images(), [ds.scene(0), ds.scene(1)])


# ----------------------------------------------------------------------------- the shipped detector

def test_scorer_file_is_small():
    assert geneval.SCORER_FILE.exists(), "run `python -m reca_nb.build.fit_scorer`"
    assert geneval.SCORER_FILE.stat().st_size < 1_000_000


@pytest.mark.parametrize("size", [32, 64])
def test_scorer_on_ground_truth_renders(prompts, renders, size):
    r = geneval.score_t2i(renders[size], prompts)
    assert r["overall"] >= 0.98, r
    assert min(r[c] for c in CATEGORIES) >= 0.95, r
    assert r["counts"] == {c: N_PER_CAT for c in CATEGORIES}


def test_detect_reads_scenes_exactly(prompts, renders):
    found = geneval.detect(renders[32])
    exact = np.mean([f == s.objects for f, s in zip(found, prompts)])
    assert exact >= 0.97


def test_detect_accepts_pil_and_numpy(renders):
    x = renders[64][:3]
    pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in x]
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert geneval.detect(pil) == geneval.detect(arr) == geneval.detect(x)


def test_wrong_images_score_low(prompts, renders, chance):
    shuffled = torch.roll(renders[32], 1, 0)  # each prompt gets another prompt's image
    r = geneval.score_t2i(shuffled, prompts)
    assert r["overall"] <= chance["overall"] + 0.15, (r, chance)
    black = geneval.score_t2i(torch.zeros(len(prompts), 3, 32, 32), prompts)
    assert black["overall"] == 0.0


@pytest.mark.parametrize("kind", ["uniform", "blurred_gaussian"])
def test_noise_scores_near_chance(prompts, chance, kind):
    g = torch.Generator().manual_seed(3)
    n = len(prompts)
    if kind == "uniform":
        x = torch.rand(n, 3, 32, 32, generator=g)
    else:
        x = _blur((0.5 + 0.25 * torch.randn(n, 3, 64, 64, generator=g)).clamp(0, 1), 2.0).clamp(0, 1)
    r = geneval.score_t2i(x, prompts)
    assert r["overall"] <= chance["overall"] + 0.10, (r, chance)


def test_scorer_tolerates_mild_generator_artefacts(prompts, renders):
    x = renders[32]
    g = torch.Generator().manual_seed(4)
    blurred = _blur(x, 0.8)
    down_up = F.interpolate(F.interpolate(x, size=(16, 16), mode="area"), size=(32, 32), mode="bilinear")
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    for name, y in [("blur", blurred), ("down-up 16", down_up), ("noise", noisy)]:
        assert geneval.score_t2i(y, prompts)["overall"] >= 0.95, name


def _tokenizer(name):
    path = DATA_DIR / "tokenizers" / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"{path} not shipped yet")
    if name == "vq":
        from reca_nb.encoders.vq import load_vq
        return load_vq().reconstruct
    ae = pytest.importorskip("reca_nb.encoders.autoencoder").load_ae()
    return lambda x: ae.decode(ae.encode(x))


@pytest.mark.parametrize("name", ["vq", pytest.param("ae", marks=pytest.mark.slow)])  # AE: ~20 s on CPU
@pytest.mark.parametrize("size", [32, 64])
def test_scorer_on_tokenizer_reconstructions(prompts, renders, name, size):
    rec = _tokenizer(name)
    with torch.no_grad():
        r = geneval.score_t2i(rec(renders[size]), prompts)
    assert r["overall"] >= 0.98, r


# ----------------------------------------------------------------------------- evaluating a model

class _FakeUMM(torch.nn.Module):
    """Stands in for a UMM: renders a scene that satisfies each prompt (or black); captions by detection."""

    def __init__(self, oracle=True, und_size=32):
        super().__init__()
        self.oracle, self.image_size, self.und_size = oracle, 32, und_size
        self.calls, self.seen_sizes = [], []
        self.by_prompt = {s.prompt: s for s in geneval.geneval_prompts(N_PER_CAT, seed=SEED)}

    def sample(self, prompts, cond=None, generator=None):
        assert isinstance(generator, torch.Generator) and not self.training
        self.calls.append(len(prompts))
        if not self.oracle:
            return torch.zeros(len(prompts), 3, 32, 32)
        return torch.stack([shapes.to_tensor(shapes.render(self.by_prompt[p], 32)) for p in prompts])

    def caption(self, images):
        self.seen_sizes.append(tuple(images.shape[-2:]))
        return [shapes.describe(objs) for objs in geneval.detect(images)]


def test_evaluate_t2i_with_fake_models():
    m = _FakeUMM().train()
    r, images, scenes = geneval.evaluate_t2i(m, N_PER_CAT, seed=SEED, batch_size=40, progress=False,
                                             return_images=True)
    assert r["overall"] >= 0.98 and images.shape == (150, 3, 32, 32) and len(scenes) == 150
    assert m.calls == [40, 40, 40, 30] and m.training  # batched, and train mode restored
    black = geneval.evaluate_t2i(_FakeUMM(oracle=False), N_PER_CAT, seed=SEED, progress=False)
    assert black["overall"] == 0.0


def test_evaluate_i2t_resizes_to_und_size():
    m = _FakeUMM(und_size=32)
    r = geneval.evaluate_i2t(m, n=40, seed=SEED, progress=False)
    assert m.seen_sizes == [(32, 32)] and r["exact"] >= 0.95 and r["n"] == 40
    m = _FakeUMM()
    geneval.evaluate_i2t(m, n=40, seed=SEED, und_size=16, batch_size=25, progress=False)
    assert m.seen_sizes == [(16, 16), (16, 16)]


# ----------------------------------------------------------------------------- fitting

def test_fit_scorer_smoke_is_deterministic_and_round_trips(tmp_path):
    from reca_nb.build import fit_scorer

    cfg = fit_scorer.FitConfig(n_prompted=48, n_random=48, n_large=8, n_recon=0, steps=3, batch=16,
                               tokenizers="none")
    a, _ = fit_scorer.fit(cfg, progress=False)
    b, _ = fit_scorer.fit(cfg, progress=False)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    geneval.save_scorer(a, tmp_path / "s.safetensors", meta={"x": 1, "y": [2]})
    geneval.save_scorer(b, tmp_path / "t.safetensors", meta={"x": 1, "y": [2]})
    assert (tmp_path / "s.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()
    c = geneval.load_scorer(tmp_path / "s.safetensors")
    assert c.meta["y"] == [2] and c.config == a.config
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(a(x), c(x), atol=0.05)  # float16 storage
    assert geneval.slot_logits(x, c).shape == (4, 4, geneval.N_CLASSES)
