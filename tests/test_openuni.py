"""OpenUniMini: a frozen VLM + meta-queries + connector + Sana DiT trained with flow matching.

Most tests use tiny stand-ins for the shared frozen CLIP and autoencoder (fixed random patch features,
average-pool "latents"), so they test this module's logic and run without the shipped checkpoints;
the shipped CLIP and autoencoder are checked in tests/test_frozen_parts.py.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.world.shapes import ShapeWorld
from tests.standins import TINY_OPENUNI as TINY, tiny_openuni as tiny


@pytest.fixture(scope="module")
def batch():
    ds = ShapeWorld(8, seed=3)
    items = [ds[i] for i in range(8)]
    img = torch.stack([x["image"] for x in items])  # (8, 3, 32, 32)
    und = F.interpolate(img, size=28, mode="area")
    return img, und, [x["prompt"] for x in items], [x["description"] for x in items]


def freeze_understanding(m):
    m.freeze({"frozen", "understanding"})


def test_is_made_of_library_classes():
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
    from transformers import PreTrainedModel

    m = tiny()
    assert isinstance(m.dit, SanaTransformer2DModel)
    assert isinstance(m.scheduler, FlowMatchEulerDiscreteScheduler)
    assert isinstance(m.llm, PreTrainedModel)
    assert m.arch == "openuni" and m.config.image_size == 32 and m.config.und_size == 28
    assert m.config.vocab_size == len(m.tok)


def test_prompt_count_must_match_images(batch):
    img, _, prompts, _ = batch
    with pytest.raises(ValueError):
        tiny().generation_loss(img, prompts[:3])


def test_left_padding_is_invisible():
    """A prompt's condition must not depend on the longer prompts it is batched with."""
    m = tiny().eval()
    short, long = "a red circle", "a blue square left of a green triangle"
    alone = m.condition([short])
    together = m.condition([short, long])
    torch.testing.assert_close(alone[0], together[0], atol=1e-5, rtol=1e-4)
    cond = torch.randn(2, 5, 64)
    dropped = m.condition(["", ""], cond, drop=torch.tensor([True, True]))
    torch.testing.assert_close(dropped, m.condition(["", ""]), atol=1e-5, rtol=1e-4)  # CFG branch = no cond


def _wake_cross_attention(m):
    """What training does first: the zero-initialised cross-attention outputs become non-zero."""
    for block in m.dit.transformer_blocks:
        nn.init.normal_(block.attn2.to_out[0].weight, std=0.02)


def test_all_positions_connector_ignores_padding():
    """connector_input="all": padded positions are zero and masked, so the DiT's velocity for a prompt is the
    same alone or batched with a longer prompt (and with a dropped image condition)."""
    m = tiny(connector_input="all").eval()
    _wake_cross_attention(m)
    short, long = "a red circle", "a blue square left of a green triangle"
    z, t = torch.randn(1, 4, 8, 8), torch.full((1,), 500.0)

    def velocity(prompts, cond=None, drop=None):
        ctx, keep = m.condition(prompts, cond, drop, return_mask=True)
        assert ctx.shape[:2] == keep.shape and torch.all(ctx[keep == 0] == 0)
        n = len(prompts)
        return m.dit(z.expand(n, -1, -1, -1), encoder_hidden_states=ctx, timestep=t.expand(n),
                     encoder_attention_mask=keep).sample

    with torch.no_grad():
        torch.testing.assert_close(velocity([short])[0], velocity([short, long])[0], atol=1e-4, rtol=1e-3)
        cond = torch.randn(1, 5, 64)
        torch.testing.assert_close(velocity([""], cond, torch.tensor([True])), velocity([""]), atol=1e-4,
                                   rtol=1e-3)
        assert (velocity([short]) - velocity([long])).abs().max() > 1e-4  # ... while the prompt matters
    with pytest.raises(ValueError, match="connector_input"):
        tiny(connector_input="some")


def test_condition_starts_silent(batch):
    """Zero-initialised cross-attention: at step 0 the prompt does not move the velocity, but the queries
    differ by prompt (no collapse to build on), and one optimiser step opens the path."""
    img, _, prompts, _ = batch
    m = tiny().eval()
    x0 = torch.randn(2, 4, 8, 8)
    ctx = m.condition([prompts[0], prompts[1]])
    assert (ctx[0] - ctx[1]).abs().mean() > 0.05 * ctx.abs().mean()
    t = torch.full((2,), 500.0)
    v = lambda c: m.dit(x0, encoder_hidden_states=c, timestep=t).sample  # noqa: E731
    torch.testing.assert_close(v(ctx), v(ctx.flip(0)))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m.train()
    m.generation_loss(img, prompts).backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        assert (v(ctx) - v(ctx.flip(0))).abs().max() > 1e-4


@pytest.mark.parametrize("vlm_gen_grad", [False, True])
def test_gradients_reach_generation_not_vlm(batch, vlm_gen_grad):
    img, und, _, _ = batch
    m = tiny()
    if vlm_gen_grad:  # a trainable understanding group lets the generation loss reach the VLM
        m.freeze({"frozen"})
    _wake_cross_attention(m)
    m.reca_loss(und, ["describe the image"] * 8, img).backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    for n in m.parameter_groups()["generation"]:
        assert grads[n] is not None, f"no gradient for generation parameter {n}"
    assert grads["queries"].abs().sum() > 0  # through the VLM's activations
    und_grads = [grads[n] for n in m.parameter_groups()["understanding"] if grads[n] is not None]
    # decoupled (OpenUni freeze_lmm): the generation loss never updates VLM weights ...
    assert (len(und_grads) > 0) == vlm_gen_grad
    # ... and with the understanding group frozen (RecA practice 3) nothing reaches it either
    m.zero_grad(set_to_none=True)
    freeze_understanding(m)
    m.reca_loss(und, ["describe the image"] * 8, img).backward()
    assert all(p.grad is None for p in m.named_group("understanding"))
    assert m.queries.grad is not None and m.queries.grad.abs().sum() > 0


def test_softmax_self_attention_option(batch):
    """dit_self_attn="softmax" swaps Sana's linear self-attention for diffusers' softmax processor."""
    from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0, SanaLinearAttnProcessor2_0

    img, _, prompts, _ = batch
    lin, soft = tiny(), tiny(dit_self_attn="softmax")
    assert isinstance(lin.dit.transformer_blocks[0].attn1.processor, SanaLinearAttnProcessor2_0)
    assert isinstance(soft.dit.transformer_blocks[0].attn1.processor, SanaAttnProcessor2_0)
    assert torch.isfinite(soft.generation_loss(img, prompts))
    with pytest.raises(ValueError, match="dit_self_attn"):
        tiny(dit_self_attn="flash")


@pytest.mark.parametrize("connector_input", ["queries", "all"])
def test_connector_norm_standardises_kept_positions(connector_input):
    """connector_norm="batch": in training the VLM hidden states entering the connector are standardised per
    feature over the kept (non-padding) positions; at sampling the running statistics are used, so a
    prompt's condition does not depend on its batch. "none" leaves them as they are."""
    m = tiny(connector_input=connector_input)
    seen = {}
    m.hidden_norm.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    prompts = ["a red circle", "a blue square left of a green triangle", "two yellow squares", "a circle"]
    m.train()
    m.condition(prompts)
    # "queries": 8 per prompt; "all": every non-padding position (<t2i>, the prompt words, <soi>, the queries)
    n_kept = 8 * 4 if connector_input == "queries" else sum(len(m.tok.encode(p)) + 2 + 8 for p in prompts)
    assert seen["inp"].shape[0] == n_kept
    out = seen["out"]
    torch.testing.assert_close(out.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(64), atol=1e-2, rtol=0)
    assert (seen["inp"].mean(0).abs() > 0.1).any()  # ... while the raw hidden states were not centred
    m.eval()
    alone = m.condition(prompts[:1])[0]
    ctx, keep = m.condition(prompts, return_mask=True)
    together = ctx[0][keep[0].bool()]  # the lone prompt's positions, padding left out
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-4)
    assert isinstance(tiny(connector_norm="none").hidden_norm, nn.Identity)
    with pytest.raises(ValueError, match="connector_norm"):
        tiny(connector_norm="layer")


def test_bridge_research_script_runs(tmp_path):
    """tools/openuni_bridge.py (the experiments quoted in data/README.md) still runs against the package:
    two stage-0 steps (word table read through the VLM's LLM), then two distillation steps of the bridge."""
    import subprocess
    import sys

    from reca_nb.paths import REPO_ROOT

    env = {**os.environ, "RECA_NB_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "openuni_bridge.py"), *a],  # noqa
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    words = run("words", "--source=table-llm", f"--dest={tmp_path / 'w'}", f"--out={tmp_path / 'wr'}",
                "--steps=2", "--batch=4", "--n_t2i_pairs=16", "--n_images=32", "--eval=False", "--progress=False",
                "--save_every=0")
    assert words.returncode == 0, words.stderr[-2000:]
    ckpt = tmp_path / "w" / "openuni.safetensors"
    from safetensors.torch import load_file

    assert "emb_direct.weight" in load_file(ckpt)  # stage 0 trained the DiT's own word table
    bridge = run("bridge", f"--init={ckpt}", "--distill=1", "--steps=2", "--batch=4", "--eval=False")
    assert bridge.returncode == 0, bridge.stderr[-2000:]


def test_text_encoder_route(batch):
    """Pretraining stage "sana": the DiT reads the prompt through its own word table, not the VLM."""
    img, und, prompts, _ = batch
    m = tiny(text_route="text_encoder")
    ctx, mask = m.condition(prompts[:2] + [""], drop=torch.tensor([False, False, True]), return_mask=True)
    n_words = [1 + len(m.tok.encode(p)) for p in prompts[:2]]  # <t2i> + the prompt
    assert mask.sum(1).tolist() == n_words + [1] and ctx.shape == (3, max(n_words), 64)
    torch.testing.assert_close(ctx[2][mask[2].bool()], m.text_encoder.weight[[m.tok.stoi["<t2i>"]]])
    assert (ctx[~mask.bool()] == 0).all()
    _wake_cross_attention(m)  # zero-initialised: no gradient reaches the condition before the first step
    m.generation_loss(img[:4], prompts[:4]).backward()
    assert m.text_encoder.weight.grad.abs().sum() > 0 and m.queries.grad is None  # the VLM route is unused
    with pytest.raises(ValueError, match="meta_queries"):
        m.condition(prompts[:2], cond=m.understanding_embedding(und[:2]))
    # groups: the word table learns only while it is the route; freeze_dit moves the DiT to "frozen"
    g = m.parameter_groups()
    assert "text_encoder.weight" in g["generation"] and not any(n.startswith("dit.") for n in g["frozen"])
    g = tiny(freeze_dit=True).parameter_groups()
    assert "text_encoder.weight" in g["frozen"] and any(n.startswith("dit.") for n in g["frozen"])
    assert not any(n.startswith("dit.") for n in g["generation"]) and "queries" in g["generation"]


def test_untied_lm_head_keeps_prompt_only_words_apart():
    """Tied, the captioning softmax pushed every word that captions never use ("two", "three", "above", ...)
    to one shared direction (cosine 0.99 in a 1200-step base), so a frozen VLM could not tell them apart."""
    def tied(m):
        return m.llm.get_output_embeddings().weight.data_ptr() == m.llm.get_input_embeddings().weight.data_ptr()

    assert not tied(tiny()) and tied(tiny(llm_tie_embeddings=True))


def test_pretrain_runs_sana_then_bridge(tmp_path):
    """`python -m reca_nb.build.pretrain --arch=openuni`: stage "sana" trains the DiT (own text encoder) and the VLM
    (I2T); stage "bridge" trains only the meta-queries and connector, DiT and VLM untouched."""
    import json

    from safetensors.torch import load_file

    from reca_nb.build import pretrain

    tiny_flags = [f"--model.{k}={v}" for k, v in TINY.items() if k != "clip_width"]
    entry = pretrain.main(["--arch=openuni", "--steps=2", "--batch=4", "--n_images=32", "--n_t2i_pairs=8",
                           "--save_every=0", f"--dest={tmp_path / 'ck'}", f"--out={tmp_path / 'run'}",
                           "--eval=False", "--progress=False"] + tiny_flags)
    sana = load_file(tmp_path / "run" / "sana" / "model.safetensors")
    final = load_file(tmp_path / "ck" / "openuni.safetensors")
    hist = {n: json.loads((tmp_path / "run" / n / "history.json").read_text()) for n in ("sana", "bridge")}
    terms = {n: {k for r in h for k in r if k.startswith("loss_")} for n, h in hist.items()}
    assert terms == {"sana": {"loss_t2i", "loss_i2t"}, "bridge": {"loss_t2i"}}  # the VLM learns I2T in "sana"
    for k, v in final.items():
        if k.startswith(("dit.", "llm.", "projector.", "text_encoder.")):
            torch.testing.assert_close(v, sana[k], rtol=0, atol=0)  # the bridge stage left them alone
        if k.startswith(("queries", "connector.")):
            assert not torch.equal(v, sana[k]), k  # ...and trained these
    assert [s["name"] for s in entry["stages"]] == ["sana", "bridge"]
    cfg = json.loads((tmp_path / "ck" / "MANIFEST.json").read_text())["openuni"]["model_config"]
    assert cfg["text_route"] == "meta_queries" and cfg["freeze_dit"] is False  # stage settings not saved
