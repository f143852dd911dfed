"""reca_nb.models.real.janus_pro on a tiny random Janus-Pro of the real transformers classes (offline): its RecA chat
prompt, RecA + LoRA through train() on an image folder, a tiny overfit, adapters and weights saved and reloaded, the
save_pretrained / from_pretrained path that real checkpoints take, the memory estimate and the CLI."""
from dataclasses import replace
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reca_nb.models.real import janus_pro
from reca_nb.adapters import load_adapters, read_meta
from reca_nb.world.folder import ImageFolder
from reca_nb.memory import estimate_memory, format_memory, transformer_activations
from reca_nb.train import apply_freeze, train
from reca_nb.recipe import preset


pytestmark = pytest.mark.usefixtures("own_home_one_thread")


@pytest.fixture(scope="module")
def tiny():
    return janus_pro.load(tiny=True)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"p{i}.png")
        (root / f"p{i}.txt").write_text(f"picture {i}")
    return root


def test_reca_prompt_is_the_chat_turn_and_lora_trains_the_head_in_full(tiny):
    m = tiny.eval()
    assert (m.image_size, m.und_size, m.n_und, m.n_gen) == (32, 32, 16, 16)
    x = torch.rand(2, 3, 32, 32)
    # the RecA prompt is Janus-Pro's chat turn with the image slots expanded, ending in <begin_of_image>
    text = m.format_reca_sample("Describe the image.")
    assert text.startswith("<|User|>: <begin_of_image>") and text.endswith(
        "Describe the image.\n\n<|Assistant|>:<begin_of_image>")
    assert text.count(janus_pro.IMAGE) == m.n_und
    ids, _ = m._gen_prefix(["Describe the image."], with_image=True)
    assert m.tok.decode(ids[0]) == janus_pro.BOS + text and (ids == m.img_id).sum() == m.n_und
    for loss in (m.reca_loss(x, ["Describe.", "What is here?"], x), m.i2t_loss(x, ["a cat", "two dogs"]),
                 m.generation_loss(x, ["a cat", "a dog"])):
        assert np.log(m.hf.config.vq_config.num_embeddings) / 3 < loss.item() < 10
    groups = m.parameter_groups()
    assert set(m.lora_full()) == set(groups["generation"]) and groups["generation"]
    with pytest.raises(ValueError, match="32x32 target"):
        m.generation_loss(torch.rand(1, 3, 16, 16), ["x"])


def test_unconditional_rows_keep_only_bos_and_final_boi(tiny):
    ids, _ = tiny._gen_prefix(["short", "a much longer prompt"], with_image=True)
    un = tiny._uncond(ids)
    pad, bos = tiny.tok.pad_token_id, tiny.tok.bos_token_id
    for row, orig in zip(un.tolist(), ids.tolist()):
        keep = [(i, t) for i, t in enumerate(row) if t != pad]
        assert keep == [(orig.index(bos), bos), (len(row) - 1, tiny.boi_id)]
    assert not (un == tiny.img_id).any()  # no condition slots: CFG's unconditional branch sees no h_v


@pytest.mark.slow
def test_reca_lora_overfit_saves_adapters_that_reload(photos, tmp_path):
    """2 images, 60 LoRA steps: the RecA CE must fall from ln(64) ~ 4.2 to near 0 (measured 0.04-0.07);
    broken learning stays above 2. Then the adapters file alone rebuilds the trained model."""
    model = janus_pro.load(tiny=True, cfg_dropout=0.0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    rec = replace(preset("janus-pro"), steps=60, batch=4, i2t_ratio=0.5, lr=1e-2, warmup=3, schedule="constant",
                            prompts="single", lora_r=8, device="cpu")
    out = tmp_path / "run"
    history = train(model, rec, out_dir=out, data=ImageFolder(photos).batches, progress=False)
    reca = [r["loss_reca"] for r in history]
    i2t = [r["loss_i2t"] for r in history]
    assert reca[0] > 3.0 and reca[-1] < 0.5, reca
    assert i2t[-1] < i2t[0] - 0.3, i2t
    after = model.state_dict()
    assert set(after) == set(base)  # LoRA merged back: the original structure
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert any(k.startswith("hf.model.generation_head.") for k in changed)  # trained in full
    assert any(".language_model.layers." in k for k in changed)  # merged LoRA deltas
    assert not any(k.startswith(("hf.model.vqmodel.", "hf.model.vision_model.")) for k in changed)
    # adapters: small, and enough to rebuild the trained weights from the base
    meta = read_meta(out / "adapters.safetensors")
    assert meta["r"] == 8 and meta["arch"] == "janus-pro" and meta["full"] == sorted(model.lora_full())
    assert meta["n_params"] < 0.5 * sum(v.numel() for v in base.values())
    fresh = janus_pro.load(tiny=True, cfg_dropout=0.0)
    assert all(torch.equal(v, base[k]) for k, v in fresh.state_dict().items())  # same seed, same base
    load_adapters(fresh, out / "adapters.safetensors")
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, after[k], rtol=1e-5, atol=1e-6)
    # full weights as safetensors, reloaded through UMM.load
    again = janus_pro.JanusPro.load(out / "model.safetensors")
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items())
    with pytest.raises(ValueError, match="not 'janus'"):
        from reca_nb.models.janus import JanusMini, JanusMiniConfig

        load_adapters(JanusMini(JanusMiniConfig(load_vq=False)), out / "adapters.safetensors")


def test_save_pretrained_folder_loads_like_a_hub_checkpoint(tiny, tmp_path):
    """Real checkpoints go through JanusProcessor / JanusForConditionalGeneration.from_pretrained: a local
    save_pretrained folder takes exactly that path offline."""
    tiny.hf.save_pretrained(tmp_path / "ckpt")
    tiny.processor.save_pretrained(tmp_path / "ckpt")
    m = janus_pro.load(tmp_path / "ckpt", gradient_checkpointing=True)
    assert m.config.model_id == tmp_path / "ckpt" or str(m.config.model_id) == str(tmp_path / "ckpt")
    assert (m.image_size, m.n_und, m.processor.num_image_tokens) == (32, 16, 16)
    x = torch.rand(2, 3, 32, 32)
    tiny.eval(), m.eval()
    torch.testing.assert_close(m.reca_loss(x, ["Describe."] * 2, x), tiny.reca_loss(x, ["Describe."] * 2, x))
    torch.testing.assert_close(m.i2t_loss(x, ["a", "b c"]), tiny.i2t_loss(x, ["a", "b c"]))
    m.train()
    m.reca_loss(x, ["Describe."] * 2, x).backward()  # gradient checkpointing runs
    assert m.hf.model.generation_head.vision_head.weight.grad is not None


def test_memory_estimate_counts_what_apply_freeze_trains():
    for freeze in ("lora", "none", "understanding"):
        model = janus_pro.load(tiny=True)
        rec = replace(preset("janus-pro"), freeze=freeze, lora_r=4)
        est = estimate_memory(model, rec)
        lora = apply_freeze(model, rec)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert est["trainable_params"] == trained, freeze
        assert est["activations"] > 0 and est["total"] > est["weights"] + est["activations"]
        if lora is not None:
            lora.merge_and_unload()
    text = format_memory(est, gpu_gb=16)
    assert "ESTIMATE" in text and "fits a 16 GB GPU" in text
    kw = dict(batch=4, seq=1200, hidden=2048, intermediate=5632, layers=24, itemsize=2)
    assert transformer_activations(**kw, checkpointing=True) < transformer_activations(**kw) / 10


def test_cli_arch_janus_pro_trains_on_a_folder(photos, tmp_path, capsys):
    from reca_nb.train import main

    out = tmp_path / "cli"
    history = main(["--arch=janus-pro", "--tiny", f"--image_folder={photos}", "--steps=2", "--warmup=1",
                    "--batch=2", "--log_every=1", "--device=cpu", f"--out={out}", "--progress=False"])
    printed = capsys.readouterr().out
    assert [r["step"] for r in history] == [1, 2] and "loss_i2t" in history[0]
    assert "memory ESTIMATE" in printed and "2 with captions" in printed
    assert (out / "adapters.safetensors").exists() and (out / "model.safetensors").exists()
    with pytest.raises(ValueError, match="Unknown config key"):
        main(["--arch=janus-pro", "--tiny", f"--image_folder={photos}", "--stepz=2"])
    with pytest.raises(SystemExit, match="--image_folder is required"):
        main(["--arch=janus-pro", "--tiny"])


def test_cli_reports_the_folder_once_after_reading(photos, tmp_path, capsys):
    from reca_nb.train import main

    (photos / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the skipped file is counted in the report, not warned
        main(["--arch=janus-pro", "--tiny", f"--image_folder={photos}", "--steps=2", "--warmup=1", "--batch=2",
              "--device=cpu", f"--out={tmp_path / 'cli'}", "--progress=False"])
    reports = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{photos}:")]
    assert reports == [f"{photos}: read 2 of 3 image files, 2 with captions, skipped: 1 unreadable"]
