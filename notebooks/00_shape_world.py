# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Shape world, tokenizers and GenEval-mini
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-ACCOUNT/reca_nb/blob/main/notebooks/00_shape_world.ipynb)
#
# **What you will learn**
# - the synthetic *shape world* every miniature is trained on, and its two kinds of text: GenEval-style
#   prompts (T2I) and full descriptions (I2T);
# - the three image representations the architectures use: discrete VQ tokens (Show-o, Janus), continuous
#   autoencoder latents (Harmon, BAGEL, OpenUni) and semantic CLIP features (the understanding side);
# - **GenEval-mini**, the offline scorer that turns "does this image match its prompt?" into the six GenEval
#   categories — and how we check that the scorer itself can be trusted.
#
# **Prerequisites**: none. Paper: RecA, arXiv 2509.07295, Sec. 4 (GenEval) · **Runtime**: CPU ≈ 15 s (measured by `make bench`, results/bench.md).

# %% Colab only: fetch the repository and install it (does nothing elsewhere)
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isdir("/content/reca_nb"):
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/YOUR-GITHUB-ACCOUNT/reca_nb", "/content/reca_nb"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/reca_nb"], check=True)
    sys.path.insert(0, "/content/reca_nb")
    print("reca_nb installed. If Colab asks to restart the session, accept, then run the notebook again from "
          "the top (this cell then skips the install).")

# %%
import torch

from reca_nb import plotting
from reca_nb.encoders.autoencoder import load_ae
from reca_nb.encoders.clip import load_clip
from reca_nb.encoders.vq import load_vq
from reca_nb.evaluation import geneval
from reca_nb.world import shapes
from reca_nb.world.text import tokenizer

torch.manual_seed(0)

# %% tags=["parameters"]
N_PER_CATEGORY = 20  # held-out GenEval-mini prompts per category (6 categories)
SEED = 10_000  # evaluation seed: never used for training anything in data/

# %% [markdown]
# ## 1 · A world of coloured shapes
#
# A scene holds 1–4 objects (circle, square, triangle; six colours) in the cells of a 2×2 grid. Each scene is
# drawn *for* one of GenEval's six categories and comes with a **prompt** that only partly describes it
# ("a red square" says nothing about where the square is) and a **description** that names every object.
# Everything is a pure function of `(seed, index)`.

# %%
ds = shapes.ShapeWorld(12, seed=1)
items = [ds[i] for i in range(12)]
plotting.image_grid([it["image"] for it in items], nrow=6, titles=[it["prompt"] for it in items])

# %%
for i in range(3):
    print(f"{items[i]['prompt']!r:40} -> {items[i]['description']!r}")
assert torch.equal(shapes.ShapeWorld(12, seed=1)[5]["image"], items[5]["image"])  # deterministic
assert all(ds.scene(i).spec.satisfied_by(ds.scene(i).objects) for i in range(12))  # every prompt holds

# %% [markdown]
# The same scene renders at any resolution — we will need that for the information bottleneck, where the
# understanding side sees a *smaller* picture than the one the generator must reproduce.

# %%
scene = ds.scene(3)
views = [shapes.to_tensor(shapes.render(scene, s)) for s in (16, 32, 64)]
[v.shape for v in views]

# %% [markdown]
# ## 2 · Words: one small tokenizer
#
# Every miniature shares one word-level tokenizer over the shape-world words plus the words of our 404
# RecA prompt templates. An unknown word is an error, not a silent `<unk>`.

# %%
tok = tokenizer()
ids = tok.encode("a red circle left of a blue square")
print(len(tok), "words;", ids, "->", tok.decode(ids))
try:
    tok.encode("a red dragon")
except ValueError as err:
    print("ValueError:", err)

# %%
assert tok.decode(ids) == "a red circle left of a blue square"

# %% [markdown]
# ## 3 · Images as tokens, latents and features
#
# **VQ tokens** (Show-o, Janus): a k-means codebook over 4×4-pixel patches. One codebook serves every
# resolution, so a 32×32 image becomes 8×8 = 64 tokens and its 16×16 thumbnail 4×4 = 16 tokens *of the same
# vocabulary*. That shared space is what makes copy collapse possible (notebook 02).

# %%
vq = load_vq()
x32 = ds.images(range(8))  # (8, 3, 32, 32)
codes32 = vq.encode(x32)
codes16 = vq.encode(torch.nn.functional.interpolate(x32, size=16, mode="area"))
rec_vq = vq.decode(codes32)
mse_vq = torch.mean((rec_vq - x32) ** 2).item()
print(tuple(codes32.shape), tuple(codes16.shape), f"VQ pixel MSE at 32 px: {mse_vq:.4f}")

# %%
assert codes32.shape[1:] == (8, 8) and codes16.shape[1:] == (4, 4)
assert mse_vq < 0.005

# %% [markdown]
# **Autoencoder latents** (Harmon, BAGEL, OpenUni): a tiny diffusers `AutoencoderKL` maps 32×32×3 to
# 4×8×8 continuous latents, scaled to unit variance — what MAR and flow-matching heads generate.

# %%
ae = load_ae()
z = ae.encode(x32)
rec_ae = ae.decode(z)
mse_ae = torch.mean((rec_ae - x32) ** 2).item()
print(tuple(z.shape), f"latent std {z.std():.2f}", f"AE pixel MSE: {mse_ae:.4f}")

# %%
assert z.shape[1:] == (4, 8, 8)
assert mse_ae < 0.005

# %%
plotting.image_grid(torch.cat([x32, rec_vq, rec_ae]), nrow=8, title="originals · VQ reconstructions · AE reconstructions")

# %% [markdown]
# **Semantic features** (the understanding side): a tiny CLIP (transformers `CLIPModel`) trained
# contrastively on (image, description) pairs. Its patch features are what RecA conditions on in the
# Show-o-CLIP, BAGEL and OpenUni miniatures. "Semantic" here is measured, not assumed: the right description
# must win a retrieval among many candidates.

# %%
clip = load_clip()
feats = clip.image_tokens(torch.nn.functional.interpolate(x32, size=16, mode="area"))
texts = [ds[i]["description"] for i in range(12)]
sims = clip.image_embeds(ds.images(range(12))) @ clip.text_embeds(texts).T
top1 = (sims.argmax(1) == torch.arange(12)).float().mean().item()
print(tuple(feats.shape), f"image->description top-1 among 12: {top1:.2f}")

# %%
assert feats.shape[0] == 8 and feats.shape[2] == clip.width
assert top1 >= 0.75

# %% [markdown]
# ## 4 · GenEval-mini
#
# GenEval detects objects in a generated image and checks rules per category. GenEval-mini does the same
# with a small CNN that classifies each grid cell (empty, or colour × shape), then applies the prompt's rule.
# Before trusting it on generated images we check it on images whose answer we know:
# ground-truth renders and their tokenizer reconstructions (should be ≈100%), and noise (should be
# near the *chance* score of a generator that ignores its prompt).

# %%
scenes = geneval.geneval_prompts(N_PER_CATEGORY, SEED)
truth = shapes.ShapeWorld(len(scenes), seed=SEED).images()
noise = torch.rand_like(truth)
results = {
    "ground truth": geneval.score_t2i(truth, scenes),
    "VQ recon": geneval.score_t2i(vq.decode(vq.encode(truth)), scenes),
    "AE recon": geneval.score_t2i(ae.decode(ae.encode(truth)), scenes),
    "noise": geneval.score_t2i(noise, scenes),
    "chance": geneval.chance_t2i(scenes),
}
print(geneval.format_table(results))

# %%
for name in ("ground truth", "VQ recon", "AE recon"):
    assert results[name]["overall"] >= 0.98, name
assert results["noise"]["overall"] <= results["chance"]["overall"] + 0.10

# %%
plotting.plot_geneval(results)

# %% [markdown]
# The I2T side is scored by parsing a caption back into objects and cells: exact scene match, per-cell
# accuracy, and colour / shape accuracy over the true objects.

# %%
rand = shapes.ShapeWorld(60, seed=20_000, kind="random")
gt_scenes = [rand.scene(i) for i in range(60)]
perfect = geneval.score_i2t([s.description for s in gt_scenes], gt_scenes)
shuffled = geneval.score_i2t([s.description for s in gt_scenes[1:] + gt_scenes[:1]], gt_scenes)
perfect, shuffled

# %%
assert perfect["exact"] == 1.0 and shuffled["exact"] < 0.2

# %% [markdown]
# ## Summary
# - Shape world gives every image a partial GenEval-style **prompt** and a complete **description**.
# - VQ tokens, AE latents and CLIP features are the three representations the miniatures use; all three
#   are small shipped artefacts in `data/`, rebuilt by `make data`.
# - GenEval-mini scores ≥98% on ground truth and reconstructions and stays near chance on noise, so a
#   score change in later notebooks is about the generator, not the scorer.
#
# ## Exercises
# 1. **Knob: `size` in `shapes.render`.** Render a scene at 16, 24 and 64 px and score each with
#    `geneval.detect`. At which size does the scorer start to fail? (It reads images at 32 px.)
# 2. **Knob: the understanding resolution.** Encode an image at 32 and at 16 px with `vq.encode`. How many
#    tokens does each give, and why does the 16 px view make copying impossible?
# 3. **Knob: `N_PER_CATEGORY`.** Re-run with 5 and with 50 prompts per category and compare the chance row.
#    How many prompts do you need before a 5-point GenEval difference means something?

# %%
# Solution check for exercise 2: the 16 px view has a quarter of the tokens, so it cannot hold the
# 64 target tokens verbatim.
assert codes16[0].numel() * 4 == codes32[0].numel()
