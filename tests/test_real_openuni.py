"""OpenUniReal on tiny random configs of the real classes (InternVL + SANA + DC-AE), offline, CPU."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from reca_nb.adapters import load_adapters
from reca_nb.models.real.openuni import load
from reca_nb.recipe import preset
from reca_nb.world.shapes import ShapeWorld
from reca_nb.train import lora_targets, train


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return load(tiny=True, device="cpu", **kw)


def recipe(**kw):
    """The CI preset of the miniature OpenUni (freeze understanding, lambda_i2t 0, bottleneck 28 px), for the
    real model's tiny twin."""
    return replace(preset("openuni", "ci"), arch="openuni-real", device="cpu", **kw)


@pytest.fixture(scope="module")
def batch():
    items = [ShapeWorld(8, seed=3)[i] for i in range(8)]
    img = torch.stack([x["image"] for x in items])  # (8, 3, 32, 32)
    return img, F.interpolate(img, size=28, mode="area"), [x["prompt"] for x in items]


def snapshot(model, group):
    names = set(model.parameter_groups()[group])
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in names}


def test_is_made_of_the_real_classes():
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import InternVLForConditionalGeneration

    m = tiny()
    assert isinstance(m.vlm, InternVLForConditionalGeneration)
    assert isinstance(m.dit, SanaTransformer2DModel) and isinstance(m.vae, AutoencoderDC)
    assert (m.image_size, m.und_size, m.factor) == (32, 32, 4)
    assert not any(p.requires_grad for p in m.vlm.parameters())
    targets = lora_targets(m)  # LoRA finds Linear layers in both trainable parts, none in the VLM
    assert any(t.startswith("dit.transformer_blocks.") for t in targets)
    assert any(t.startswith("connector.") for t in targets)
    assert not any(t.startswith(("vlm.", "vae.")) for t in targets)


def test_generation_never_writes_into_the_vlm(batch):
    img, und, prompts = batch
    m = tiny()
    m.vlm.requires_grad_(True)  # even unfrozen (freeze="none"), generation never writes into the VLM
    m.reca_loss(und, ["describe the image"] * 8, img).backward()
    assert m.queries.grad is not None and m.queries.grad.abs().sum() > 0  # through the VLM's activations
    assert all(p.grad is None for p in m.vlm.parameters())
    assert all(p.grad is not None for n, p in m.named_parameters() if n.startswith("connector."))
    with pytest.raises(ValueError):
        m.generation_loss(img, prompts[:3])


def test_activation_checkpointing_gives_the_same_gradients(batch):
    img, und, _ = batch
    grads = []
    for ckpt in (False, True):
        m = tiny(checkpointing=ckpt).train()
        assert m.dit.gradient_checkpointing == ckpt and m.llm.gradient_checkpointing == ckpt
        m.config.cfg_drop = 0.0
        torch.manual_seed(0)
        m.reca_loss(und[:2], ["describe the image"] * 2, img[:2]).backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "queries" in grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-4, msg=n)


def test_left_padding_is_invisible():
    m = tiny().eval()
    short, long = "a red circle", "a blue square left of a green triangle"
    torch.testing.assert_close(m.condition([short])[0], m.condition([short, long])[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("freeze", ["understanding", "none"])
def test_reca_training_leaves_vlm_bit_identical(freeze):
    m = tiny()
    vlm0, gen0 = snapshot(m, "understanding"), snapshot(m, "generation")
    hist = train(m, recipe(freeze=freeze, steps=3, log_every=1), progress=False)
    assert [r["step"] for r in hist] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss_reca"])) for r in hist)
    vlm1, gen1 = snapshot(m, "understanding"), snapshot(m, "generation")
    assert all(torch.equal(vlm0[n], vlm1[n]) for n in vlm0)
    assert not torch.equal(gen0["queries"], gen1["queries"])
    assert sum(not torch.equal(gen0[n], gen1[n]) for n in gen0) > 0.9 * len(gen0)


def test_lora_adapter_save_and_reload(tmp_path, batch):
    img, und, _ = batch
    m = tiny(seed=1)
    base = snapshot(m, "generation")
    train(m, recipe(freeze="lora", steps=3, lr=5e-3), out_dir=tmp_path, progress=False)
    after = snapshot(m, "generation")
    assert set(after) == set(base)  # adapters folded back: the original structure
    assert not torch.equal(after["queries"], base["queries"])  # lora_full(): trained in full next to LoRA
    changed = {n for n in base if not torch.equal(after[n], base[n])}
    assert any(n.startswith("dit.transformer_blocks.") for n in changed)
    assert all(n == "queries" or n.endswith(".weight") for n in changed)  # LoRA merges into Linear weights

    fresh = load_adapters(tiny(seed=1), tmp_path / "adapters.safetensors")  # same base + adapters
    for n, p in m.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[n], p, atol=1e-6, rtol=1e-5, msg=n)
    m.eval(), fresh.eval()
    torch.manual_seed(0)
    a = m.reca_loss(und[:4], ["describe the image"] * 4, img[:4])
    torch.manual_seed(0)
    torch.testing.assert_close(fresh.reca_loss(und[:4], ["describe the image"] * 4, img[:4]), a)


def test_memory_estimate():
    from reca_nb.memory import estimate_memory

    m = tiny()
    full, lora = (estimate_memory(m, recipe(freeze=f)) for f in ("understanding", "lora"))
    assert full["complete"] and full["activations"] > 0
    n_gen = sum(p.numel() for p in m.named_group("generation"))
    assert full["trainable_params"] == n_gen and lora["trainable_params"] < n_gen
    assert lora["total"] < full["total"]


