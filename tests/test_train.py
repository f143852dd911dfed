"""The training loop on ToyUMM: every recipe knob, freezing, checkpoints, exact resume, failure handling."""
import json
import math
import os
import signal
import warnings

import pytest
import torch

from reca_nb.collapse import CollapseMonitor
from reca_nb.world.prompts import SINGLE_PROMPT, load_templates
from reca_nb.recipe import Recipe
from reca_nb.train import (CheckpointError, TrainingInterrupted, apply_freeze, build_optimizer, load_checkpoint,
                           lr_factor, train)
from tests.toy_umm import ToyUMM, toy

pytestmark = pytest.mark.usefixtures("own_home_one_thread")


class Spy(ToyUMM):
    """ToyUMM that records what the loop feeds it."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.calls = []

    def reca_loss(self, und_images, templates, target_images):
        self.calls.append(("und", tuple(und_images.shape)))
        return super().reca_loss(und_images, templates, target_images)

    def generation_loss(self, images, prompts, cond=None):
        self.calls.append(("reca" if cond is not None else "t2i", len(prompts), list(prompts)))
        return super().generation_loss(images, prompts, cond)

    def i2t_loss(self, images, captions):
        self.calls.append(("i2t", tuple(images.shape), list(captions)))
        return super().i2t_loss(images, captions)

    def kinds(self, kind):
        return [c for c in self.calls if c[0] == kind]


def rec(**kw):
    base = dict(arch="toy", steps=4, batch=4, n_images=48, n_t2i_pairs=12, und_res=16, warmup=1, log_every=1,
                save_every=0, device="cpu")
    return Recipe(**{**base, **kw})


def weights(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def losses(history):
    return [(r["step"], r["loss"], r.get("loss_reca"), r.get("loss_i2t"), r.get("loss_t2i"))
            for r in history if "loss" in r]


# ----------------------------------------------------------------------------- recipe knobs

def test_und_res_reaches_the_model_for_reca_and_i2t():
    m = toy(Spy, und_size=24)
    train(m, rec(und_res=16, steps=2), progress=False)
    assert {c[1][-1] for c in m.kinds("und")} == {16} and {c[1][-1] for c in m.kinds("i2t")} == {16}
    m = toy(Spy, und_size=24)
    train(m, rec(und_res=0, steps=2), progress=False)  # 0 -> the model's native und_size
    assert {c[1][-1] for c in m.kinds("und")} == {24}
    m = toy(Spy)
    train(m, rec(steps=4, i2t_und_res=(32, 16)), progress=False)  # I2T cycles, RecA keeps und_res
    assert [c[1][-1] for c in m.kinds("i2t")] == [32, 16, 32, 16]
    assert {c[1][-1] for c in m.kinds("und")} == {16}


def test_blur_reaches_the_model():
    seen = {}

    class Peek(ToyUMM):
        def understanding_embedding(self, images):
            seen.setdefault("x", images)
            return super().understanding_embedding(images)

    train(toy(Peek), rec(steps=1, warmup=0, und_res=32, blur_sigma=3.0, lambda_i2t=0), progress=False)
    x = seen["x"]
    assert x.shape[-1] == 32
    assert ((x[..., 1:] - x[..., :-1]) ** 2).mean() < 0.01  # smooth: no hard shape edges left


def test_prompt_modes_and_captions_never_used_for_reca():
    m = toy(Spy)
    train(m, rec(steps=3, batch=8, prompts="single"), progress=False)
    assert {p for c in m.kinds("reca") for p in c[2]} == {SINGLE_PROMPT}
    m = toy(Spy)
    train(m, rec(steps=3, batch=8, prompts="diverse"), progress=False)
    used = [p for c in m.kinds("reca") for p in c[2]]
    assert len(set(used)) >= 12 and set(used) <= set(load_templates("diverse"))
    captions = {p for c in m.kinds("i2t") for p in c[2]}
    assert captions and not captions & set(used)  # RecA text is a template, I2T text a description


@pytest.mark.parametrize("lams,expect", [((1, 1, 1), {"reca", "i2t", "t2i"}), ((1, 0, 0), {"reca"}),
                                         ((0, 1, 0), {"i2t"}), ((0, 0, 1), {"t2i"}),
                                         ((1, 0, 0.5), {"reca", "t2i"})])
def test_lambdas_switch_terms_and_skip_zero_ones(lams, expect):
    m = toy(Spy)
    r = rec(steps=2, lambda_reca=lams[0], lambda_i2t=lams[1], lambda_t2i=lams[2])
    h = train(m, r, progress=False)
    assert {c[0] for c in m.calls} - {"und"} == expect  # λ=0 terms are never computed
    assert {k[5:] for k in h[-1] if k.startswith("loss_")} == expect
    assert ("und" in {c[0] for c in m.calls}) == ("reca" in expect)
    w = {"reca": lams[0], "i2t": lams[1], "t2i": lams[2]}
    assert h[-1]["loss"] == pytest.approx(sum(w[k] * h[-1][f"loss_{k}"] for k in expect))


@pytest.mark.parametrize("ratio,expect", [(1.0, 4), (0.5, 2), (2.0, 8), (0.0, 0)])
def test_i2t_ratio_sets_the_i2t_batch(ratio, expect):
    m = toy(Spy)
    train(m, rec(steps=2, i2t_ratio=ratio), progress=False)
    assert [c[1][0] for c in m.kinds("i2t")] == [expect] * (2 if expect else 0)
    assert [c[1] for c in m.kinds("reca")] == [4, 4]


def test_t2i_draws_from_the_small_captioned_pool():
    from reca_nb.world.data import t2i_pool

    m = toy(Spy)
    train(m, rec(steps=3, lambda_reca=0, lambda_i2t=0, lambda_t2i=1, n_t2i_pairs=5), progress=False)
    assert {p for c in m.kinds("t2i") for p in c[2]} <= set(t2i_pool(5, 0, 32).texts)


def test_warmup_not_below_steps_warns():
    with pytest.warns(UserWarning, match=r"warmup=5 >= steps=3: the whole run is linear warm-up") as caught:
        train(toy(), rec(steps=3, warmup=5), progress=False)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(toy(), rec(steps=3, warmup=2), progress=False)


def test_schedule_values():
    r = rec(steps=10, warmup=2, schedule="cosine", lr=1e-3)
    f = [lr_factor(s, r) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0] and f[-1] == pytest.approx(0.5 * (1 + math.cos(7 / 8 * math.pi)))
    assert all(a >= b for a, b in zip(f[1:], f[2:]))  # monotone decay after warm-up
    const = rec(steps=10, warmup=3, schedule="constant")
    assert [lr_factor(s, const) for s in (0, 2, 3, 9)] == [1 / 3, 1, 1, 1]
    h = train(toy(), r, progress=False)
    assert [row["lr"] for row in h] == pytest.approx([1e-3 * x for x in f])  # the lr each step used


# ----------------------------------------------------------------------------- data

def test_pools_and_batches_are_deterministic(tmp_path):
    from reca_nb.world import data

    pool = data.image_pool(40, data_seed=5, size=32, disk=True)
    assert pool.images.dtype == torch.uint8 and pool.images.shape == (40, 3, 32, 32) and len(pool.texts) == 40
    files = list((tmp_path / "home" / "pools").glob("images-*.safetensors"))
    assert len(files) == 1
    data._POOLS.clear()  # a fresh process: reads the disk cache
    again = data.image_pool(40, data_seed=5, size=32, disk=True)
    assert torch.equal(again.images, pool.images) and again.texts == pool.texts
    t2i = data.t2i_pool(10, data_seed=5)
    assert all(t2i.texts) and not set(t2i.texts) & set(pool.texts)  # prompts vs full descriptions

    a, b = (data.Batches(32, 40, 10, data_seed=5, seed=1) for _ in range(2))
    xa, ta = a.reca(6)
    xb, tb = b.reca(6)
    assert torch.equal(xa, xb) and ta == tb and xa.dtype == torch.float32 and 0 <= xa.min() <= xa.max() <= 1
    state = a.state()
    nxt = a.i2t(3)
    a.set_state(state)
    again = a.i2t(3)
    assert torch.equal(nxt[0], again[0]) and nxt[1] == again[1]
    c = data.Batches(32, 40, 10, data_seed=5, seed=2)
    assert not torch.equal(c.reca(6)[0], xa)


# ----------------------------------------------------------------------------- freezing

def _groups(m):
    return m.parameter_groups()


@pytest.mark.parametrize("policy", ["none", "understanding"])
def test_freeze_policies(policy):
    m = toy()
    before = weights(m)
    groups = _groups(m)
    frozen = set(groups["frozen"]) | (set(groups["understanding"]) if policy == "understanding" else set())
    # absent from the optimizer
    apply_freeze(m, rec(freeze=policy))
    opt = build_optimizer(m, rec(freeze=policy))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    named = dict(m.named_parameters())
    assert {n for n in named if id(named[n]) in in_opt} == set(named) - frozen
    # bit-identical after training, the rest moved
    m = toy()
    train(m, rec(freeze=policy, steps=3, lr=1e-2), progress=False)
    after = weights(m)
    for n in before:
        assert torch.equal(before[n], after[n]) == (n in frozen), n
    assert all(p.requires_grad == (n != "codebook") for n, p in m.named_parameters())  # flags restored


def test_lora_trains_only_adapters_and_folds_back():
    m = toy()
    names = [n for n, _ in m.named_parameters()]
    lora = apply_freeze(m, rec(freeze="lora", lora_r=2))
    opt_names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert opt_names and all(".lora_A." in n or ".lora_B." in n for n in opt_names)
    adapted = {n.split(".lora_")[0] for n in opt_names}
    assert "blocks.0.qkv" in adapted and "gen_out" in adapted  # shared + generation Linears
    assert not any(a.startswith(("und_embed", "lm_head")) for a in adapted)  # understanding untouched
    assert {id(p) for g in build_optimizer(m, rec()).param_groups for p in g["params"]} == \
        {id(p) for n, p in m.named_parameters() if n in opt_names}
    lora.merge_and_unload()
    assert [n for n, _ in m.named_parameters()] == names

    m = toy()
    before = weights(m)
    train(m, rec(freeze="lora", lora_r=2, steps=3, lr=1e-2), progress=False)
    after = weights(m)
    assert list(after) == list(before)  # structure restored, adapters merged
    for n in before:
        is_target = n.endswith(".weight") and n.rsplit(".", 1)[0] in adapted
        assert torch.equal(before[n], after[n]) != is_target, n


# ----------------------------------------------------------------------------- checkpoints and resume

def test_checkpoint_round_trip(tmp_path):
    m = toy()
    r = rec(steps=3, save_every=3)
    h = train(m, r, out_dir=tmp_path, progress=False)
    st = load_checkpoint(tmp_path / "ckpt-000003.safetensors")
    assert st["step"] == 3 and st["history"] == h and st["recipe"]["steps"] == 3
    assert all(torch.equal(st["model"][k], v) for k, v in m.state_dict().items())
    assert len(st["optim"]["state"]) == sum(1 for p in m.parameters() if p.requires_grad)
    assert json.loads((tmp_path / "history.json").read_text()) == h
    assert torch.equal(type(m).load(tmp_path / "model.safetensors").gen_out.weight, m.gen_out.weight)


@pytest.mark.parametrize("freeze", ["none", "lora"])
def test_exact_resume(tmp_path, freeze):
    r = rec(steps=8, save_every=0, lambda_t2i=0.5, freeze=freeze, lr=5e-3)
    m_full = toy(seed=1)
    full = train(m_full, r, progress=False)

    stop_at_4 = lambda row, model: row.get("step") == 4  # noqa: E731
    part = train(toy(seed=1), r, out_dir=tmp_path, callbacks=[stop_at_4], progress=False)
    assert losses(part) == losses(full)[:4] and (tmp_path / "ckpt-000004.safetensors").exists()
    m_res = toy(seed=1)  # a fresh base model: everything else comes from the checkpoint
    res = train(m_res, r, out_dir=tmp_path, resume="latest", progress=False)
    assert losses(res) == losses(full)  # bit-identical, not approx
    assert all(torch.equal(a, b) for a, b in zip(weights(m_res).values(), weights(m_full).values()))


def test_log_window_survives_resume(tmp_path):
    r = rec(steps=6, log_every=3, save_every=2, keep_ckpts=3)
    full = train(toy(), r, out_dir=tmp_path, progress=False)
    (tmp_path / "ckpt-000006.safetensors").unlink()  # as if killed after step 5: step 4 is mid-window
    res = train(toy(), r, out_dir=tmp_path, resume="latest", progress=False)
    assert [row["step"] for row in res] == [3, 6] and losses(res) == losses(full)


def test_sigint_saves_then_raises_and_resumes(tmp_path):
    # Python's own Ctrl-C handler, also when the suite runs in the background (nohup / `&` start it ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_round_trip(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_round_trip(tmp_path):
    r = rec(steps=6)
    full = train(toy(), r, progress=False)

    def ctrl_c(row, model):
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # delivered mid-run; the loop finishes the step first

    with pytest.raises(TrainingInterrupted, match="interrupted at step 3") as stopped:  # a KeyboardInterrupt
        train(toy(), r, out_dir=tmp_path, callbacks=[ctrl_c], progress=False)
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*"))] == ["ckpt-000003.safetensors"]
    assert stopped.value.step == 3 and stopped.value.checkpoint == tmp_path / "ckpt-000003.safetensors"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    res = train(toy(), r, out_dir=tmp_path, resume="latest", progress=False)
    assert losses(res) == losses(full)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class Explodes(ToyUMM):
        n = 0

        def generation_loss(self, images, prompts, cond=None):
            Explodes.n += 1
            loss = super().generation_loss(images, prompts, cond)
            return loss * float("nan") if Explodes.n == 5 else loss

    m = toy(Explodes)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5.*ckpt-000004"):
        train(m, rec(steps=8, save_every=2, lambda_i2t=0), out_dir=tmp_path, progress=False)
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*"))] == [f"ckpt-00000{i}.safetensors" for i in (2, 4)]
    st = load_checkpoint(tmp_path / "ckpt-000004.safetensors")
    assert all(torch.equal(st["model"][k], v) for k, v in m.state_dict().items())  # memory = last good step
    assert all(torch.isfinite(v).all() for v in m.state_dict().values())


def test_corrupt_checkpoint_falls_back(tmp_path):
    r = rec(steps=8, save_every=2, keep_ckpts=3, schedule="constant", warmup=0)
    full = train(toy(), r, progress=False)
    train(toy(), rec(steps=6, save_every=2, keep_ckpts=3, schedule="constant", warmup=0),
          out_dir=tmp_path, progress=False)
    ck = sorted(tmp_path.glob("ckpt-*"))
    assert [p.name for p in ck] == [f"ckpt-00000{i}.safetensors" for i in (2, 4, 6)]
    data = ck[-1].read_bytes()
    ck[-1].write_bytes(data[: len(data) // 2])  # truncated (a crash while copying, a full disk)
    raw = bytearray(ck[-2].read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte inside the tensor data
    ck[-2].write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(ck[-1])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(ck[-2])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = train(toy(), r, out_dir=tmp_path, resume="latest", progress=False)
    assert sum("falling back" in str(x.message) for x in w) == 2
    assert res[1]["step"] == 2 and losses(res) == losses(full)  # restarted from step 2, same trajectory


def test_resume_rejects_a_different_recipe_and_explicit_bad_path(tmp_path):
    train(toy(), rec(steps=2, save_every=2), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="lambda_t2i"):
        train(toy(), rec(steps=4, lambda_t2i=1.0), out_dir=tmp_path, resume="latest", progress=False)
    with pytest.raises(CheckpointError):
        train(toy(), rec(steps=4), out_dir=tmp_path, resume=tmp_path / "history.json", progress=False)


# ----------------------------------------------------------------------------- eval, collapse, edge cases

def test_eval_rows_and_eval_does_not_change_training():
    modes = []

    def t2i(model):
        modes.append(model.training)
        torch.rand(100), torch.randn(3)  # an eval that burns RNG must not shift training
        image = model.sample(["a red circle"], generator=torch.Generator().manual_seed(0))
        return {"overall": float(image.mean())}

    r = rec(steps=4, eval_every=2)
    h = train(toy(), r, evals={"t2i": t2i}, progress=False)
    ev = [row for row in h if "eval" in row]
    assert [row["step"] for row in ev] == [2, 4] and modes == [False, False]
    assert losses(h) == losses(train(toy(), rec(steps=4), progress=False))


def test_default_evals_are_geneval_mini():
    h = train(toy(), rec(steps=2, eval_every=2, eval_n=12), progress=False)
    ev = [row["eval"] for row in h if "eval" in row]
    assert len(ev) == 1 and set(ev[0]) == {"t2i", "i2t"}
    assert 0 <= ev[0]["t2i"]["overall"] <= 1 and ev[0]["i2t"]["n"] == 12


def test_collapse_ratio_logged_and_stop():
    h = train(toy(), rec(steps=3), monitor=CollapseMonitor(reference=100.0), progress=False)
    assert all(0 < row["collapse_ratio"] < 1 and 0 <= row["token_agreement"] <= 1 for row in h)
    h = train(toy(), rec(steps=10), monitor=CollapseMonitor(reference=100.0, stop=True), progress=False)
    assert h[-1]["step"] == 1  # fired on the first step (loss / 100 < 0.2) and stopped


def test_zero_steps_and_all_zero_lambdas():
    m = toy()
    before = weights(m)
    assert train(m, rec(steps=0, lambda_reca=0, lambda_i2t=0)) == []
    assert all(torch.equal(before[k], v) for k, v in weights(m).items())
    with pytest.raises(ValueError, match="nothing to train"):
        train(m, rec(lambda_reca=0, lambda_i2t=0), progress=False)


def test_loop_stays_cheap():
    """Loop overhead guard: data + bookkeeping must not dominate a ToyUMM step (a few ms of model math)."""
    import time

    m = toy()
    r = rec(steps=30, batch=4, lambda_i2t=0, log_every=10)
    train(m, rec(steps=1, warmup=0), progress=False)  # warm imports and pools
    t = time.process_time()
    train(m, r, progress=False)
    loop = time.process_time() - t
    t = time.process_time()
    x = torch.rand(4, 3, 32, 32)
    opt = torch.optim.AdamW(m.parameters(), 1e-4)
    for _ in range(30):
        loss = m.reca_loss(torch.nn.functional.interpolate(x, 16), ["describe the image ."] * 4, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bare = time.process_time() - t
    assert loop < 3 * bare + 1.0, (loop, bare)
