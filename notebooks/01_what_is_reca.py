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
# # 01 · What RecA is: one model, end to end
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-ACCOUNT/reca_nb/blob/main/notebooks/01_what_is_reca.ipynb)
#
# **What you will learn**
# - the RecA objective: reconstruct an image from the model's *own understanding embedding* of it plus a
#   "describe the image" template — no caption anywhere;
# - how it runs through `reca_nb.train.train`, the one loop every architecture uses;
# - how to read a before/after comparison honestly: GenEval-mini, I2T, and a no-RecA control arm.
#
# **Prerequisites**: notebook 00. Paper: RecA, arXiv 2509.07295, Sec. 3 (method) and Sec. 4.2 ·
# **Runtime**: CPU ≈ 2.5 min (measured by `make bench`, results/bench.md).

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
from dataclasses import replace

import torch

from reca_nb import plotting
from reca_nb.evaluation import geneval
from reca_nb.models import registry
from reca_nb.paths import cache_dir
from reca_nb.recipe import preset
from reca_nb.train import train
from reca_nb.world import prompts

torch.manual_seed(0)

# %% tags=["parameters"]
ARCH = "showo-clip"  # the paper's main Show-o variant: frozen CLIP features in, VQ tokens out
STEPS = 150  # RecA steps (the paper: 5000 on Show-o; the "reca" preset: 400)
N_PER_CATEGORY = 10  # GenEval-mini prompts per category for before/after (60 in all)
RUN_DIR = cache_dir() / "runs" / "nb01"

# %% [markdown]
# ## 1 · The base model
#
# A Show-o miniature (one shared Phi transformer, VQ image tokens, masked-token generation) pretrained on
# shape world with T2I on only **2000** captioned pairs and I2T on thousands of described images: a base
# that understands well but generates with headroom — the setting RecA is meant for.

# %%
model = registry.load_base(ARCH)
n_params = sum(p.numel() for p in model.parameters())
print(f"{ARCH}: {n_params / 1e6:.2f} M trainable-shape parameters, image {model.image_size}px")

# %%
before_t2i, before_imgs, scenes = geneval.evaluate_t2i(model, N_PER_CATEGORY, return_images=True, progress=False)
before_i2t = geneval.evaluate_i2t(model, n=60, progress=False)
print(geneval.format_table({"base": before_t2i}))
print("I2T", {k: round(v, 2) for k, v in before_i2t.items()})

# %% [markdown]
# ## 2 · The RecA objective
#
# $$\mathcal{L}_{\text{RecA}} = \mathcal{L}_{\text{gen}}\big(f_\theta(\,[h_v(\downarrow I);\ t]\,),\ I\big),\qquad
# \mathcal{L} = \lambda_{\text{RecA}}\mathcal{L}_{\text{RecA}} + \lambda_{\text{i2t}}\mathcal{L}_{\text{i2t}}
# + \lambda_{\text{t2i}}\mathcal{L}_{\text{t2i}}$$
#
# $h_v$ is the understanding embedding of a downscaled view $\downarrow I$ (practice 1), $t$ a random
# template (practice 2), and $\mathcal{L}_{\text{gen}}$ the model's own generation loss (here masked-token
# CE). One RecA loss by hand, then through the library:

# %%
images = torch.stack([geneval.shapes.ShapeWorld(4, seed=3, kind="random")[i]["image"] for i in range(4)])
recipe = preset(ARCH, "reca")
templates = prompts.sample_templates(4, rng=__import__("random").Random(0))
und = recipe.und_transform(images, und_size=model.und_size)
torch.manual_seed(1)
by_hand = model.generation_loss(images, templates, cond=model.understanding_embedding(und))
torch.manual_seed(1)
library = model.reca_loss(und, templates, images)
print(tuple(und.shape), templates[0], f"{by_hand.item():.4f} == {library.item():.4f}")

# %%
assert und.shape[-1] == recipe.und_res < images.shape[-1]  # the bottleneck: a smaller understanding view
assert torch.allclose(by_hand, library)

# %% [markdown]
# ## 3 · Train
#
# The `reca` preset mirrors the official Show-o recipe: RecA + I2T mixed 1:1 (practice 4), λ_t2i = 0, diverse
# templates. Runs are checkpointed in `RUN_DIR`; re-running this cell resumes instead of starting over.

# %%
recipe = replace(preset(ARCH, "reca"), steps=STEPS, warmup=STEPS // 10, save_every=50)
print(recipe)
history = train(model, recipe, out_dir=RUN_DIR, resume="latest")
plotting.plot_history(history, keys=["loss_reca", "loss_i2t"], logy=True)

# %%
reca_curve = [r["loss_reca"] for r in history if "loss_reca" in r]
assert reca_curve[-1] < reca_curve[0]  # the generation path learns to use the understanding embedding

# %% [markdown]
# ## 4 · Before and after
#
# The same 60 held-out prompts, the same sampling seed.

# %%
after_t2i, after_imgs, _ = geneval.evaluate_t2i(model, N_PER_CATEGORY, return_images=True, progress=False)
after_i2t = geneval.evaluate_i2t(model, n=60, progress=False)
table = {"base": before_t2i, f"RecA {STEPS} steps": after_t2i}
print(geneval.format_table(table))
print("I2T exact before/after:", round(before_i2t["exact"], 2), round(after_i2t["exact"], 2))
plotting.plot_geneval(table)

# %% [markdown]
# **What we measured** (2 CPU cores, 150 steps, 60 prompts, one seed): GenEval-mini 0.45 → 0.38 and I2T exact
# 0.93 → 0.85. RecA did **not** improve T2I in this miniature at this budget — the paper reports +6 GenEval
# points on Show-o after 5000 steps. With 10 prompts per category one run moves by about ±0.06 overall, so a
# single run cannot settle it either way. The cell below checks the claim we *do* make: no gain beyond noise
# here.
#
# What settles it is the multi-seed comparison against a no-RecA control arm (the same steps without the RecA
# term, 3 seeds, 400 steps, 180 prompts): **claim 1** of the claims table,
# [`results/claims.md`](../results/claims.md#1-reca-improves-t2i-over-a-no-reca-control). Its current verdict:
# **not reproduced** on Show-o VQ (−0.15), Janus (−0.15), BAGEL (−0.14) and OpenUni (−0.23); **inconclusive**
# on Harmon (−0.07 ± 0.04) and on Show-o CLIP, this notebook's model (+0.07 ± 0.05). On Show-o CLIP position
# (+0.19) and colours (+0.09) are **reproduced** — position is one of the two categories where the paper reports
# its largest Show-o gains; the other, colour attribution, is inconclusive here (+0.01). The second cell reads
# these verdicts from `results/claims.csv`.

# %%
assert after_t2i["overall"] <= before_t2i["overall"] + 0.10

# %%
import csv  # noqa: E402

from reca_nb.paths import DATA_DIR  # noqa: E402

with open(DATA_DIR.parent / "results" / "claims.csv") as f:
    claim1 = {(r["arch"], r["metric"]): r for r in csv.DictReader(f) if r["claim"] == "claim1"}
for (arch, metric), r in claim1.items():
    if metric == "t2i.overall" or arch == ARCH:
        diff, se = float(r["diff"]), float(r["se"])
        print(f"{arch:10s} {metric:17s} RecA − control {diff:+.3f} ± {se:.3f}: {r['verdict']}")

# %%
clip = {m: claim1[(ARCH, f"t2i.{m}")] for m in ("overall", "position", "colors", "color_attr")}
assert clip["overall"]["verdict"] == "inconclusive" and abs(float(clip["overall"]["diff"]) - 0.074) < 0.005
assert clip["position"]["verdict"] == "reproduced" and abs(float(clip["position"]["diff"]) - 0.189) < 0.005
assert clip["colors"]["verdict"] == "reproduced" and abs(float(clip["colors"]["diff"]) - 0.089) < 0.005
assert clip["color_attr"]["verdict"] == "inconclusive" and abs(float(clip["color_attr"]["diff"]) - 0.011) < 0.005
others = {a: r for (a, m), r in claim1.items() if m == "t2i.overall" and a != ARCH}
assert set(others) == {"showo-vq", "janus", "harmon", "bagel", "openuni"}
assert others["harmon"]["verdict"] == "inconclusive" and abs(float(others["harmon"]["diff"]) + 0.074) < 0.005
assert all(r["verdict"] == "not reproduced" and float(r["diff"]) < -0.14
           for a, r in others.items() if a != "harmon")

# %%
k = list(range(0, len(scenes), len(scenes) // 8))[:8]
plotting.image_grid(torch.cat([before_imgs[k], after_imgs[k]]), nrow=8,
                    titles=[scenes[i].prompt for i in k] * 2, title="top: base · bottom: after RecA")

# %% [markdown]
# And what RecA itself optimises: reconstructions from the understanding embedding of held-out images.

# %%
held = geneval.shapes.ShapeWorld(8, seed=4242, kind="random").images()
recon = model.reconstruct(recipe.und_transform(held, und_size=model.und_size),
                          [prompts.SINGLE_PROMPT] * 8, generator=torch.Generator().manual_seed(0))
plotting.image_grid(torch.cat([held, recon]), nrow=8, title="top: image · bottom: RecA reconstruction")

# %%
# with I2T mixed in, understanding must not collapse (practice 4)
assert after_i2t["exact"] >= before_i2t["exact"] - 0.15

# %% [markdown]
# ## Summary
# - RecA needs nothing but unlabelled images: the understanding embedding of a downscaled view plus a random
#   template is the "prompt", and the model's own generation loss does the rest.
# - The same `train()` loop runs it; the recipe carries the four practices as named fields.
# - Whether T2I improves in miniature is measured, not assumed: in this run it did not (0.45 → 0.38, one
#   seed), while I2T, mixed in 1:1, stayed within 0.1 of the base. Over 3 seeds against a no-RecA control
#   (claim 1) it is inconclusive overall on Show-o CLIP (reproduced on position and colours) and on Harmon,
#   and not reproduced on the other four minis.
#
# ## Exercises
# Times are for one CPU thread, estimated from the training cell above (150 steps: 153 s measured, ≈1 s per
# step with the I2T batch).
# 1. **Knob: `STEPS`.** *(GPU / long: ≈ 7 min on CPU, estimated)* Run 400 steps (the `reca` preset; use a new
#    `RUN_DIR`, or the run resumes from step 150). Does GenEval-mini keep moving?
# 2. **Knob: `recipe.lambda_t2i`.** *(≈ 4 min, estimated: a third batch per step)* Set it to 0.5 (T2I on the
#    recipe's 300 captioned pairs mixed in). What happens to T2I and to the reconstructions?
# 3. **Knob: `recipe.lambda_i2t`.** *(≈ 2 min, estimated: no I2T batch)* Set it to 0 and compare the I2T
#    exact-match before and after.

# %%
# Solution check for exercise 3's premise: the preset mixes I2T 1:1 for this shared-parameter model
assert preset(ARCH, "reca").lambda_i2t == 1.0 and preset(ARCH, "reca").i2t_ratio == 1.0
