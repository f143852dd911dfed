# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
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
# # 07 · Real checkpoints: RecA on Janus-Pro (and an OpenUni-style model) with LoRA
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-ACCOUNT/reca_nb/blob/main/notebooks/07_real_checkpoints.ipynb)
#
# **What you will learn**
# - how the same `train()` loop runs RecA on a real unified model, Janus-Pro-1B from `transformers`, with LoRA
#   adapters on the shared LLM and a fully trained generation head;
# - how to feed it your own unlabelled pictures (an image folder; broken files are skipped and counted);
# - what a RecA sample is for Janus-Pro: SigLIP features of the image in a chat turn with a "describe"
#   template, the image's own VQ codes as the target;
# - how to check the memory budget *before* training, and how to save and reload the adapters;
# - whether RecA helped: GenEval's protocol (`reca_nb.evaluation.geneval_real`) on the same prompts and seeds before and
#   after training, with the difference and its bootstrap interval.
#
# **Prerequisites**: notebook 01. Papers: RecA, arXiv 2509.07295 (Sec. 3); Janus-Pro, arXiv 2501.17811 ·
# **Runtime**: CPU (tiny random models, offline) ≈ 20 s (measured by `make bench`, results/bench.md) · Colab T4 with Janus-Pro-1B: ≈ 30 min (an ESTIMATE:
# not yet measured on a GPU).
#
# On a machine without a GPU (and in CI) every cell runs on **tiny random models of the same classes**, built
# from configs with nothing downloaded. They exercise the code; their pictures are noise. On a Colab GPU the
# same cells download Janus-Pro-1B (about 4 GB) and train it for real.
#
# **What has been run where.** The CPU path (tiny random models, a hand-made 12-prompt GenEval file) runs in CI
# on every change, and every number it prints is meaningless. The GPU path is the same code with the real
# checkpoints, GenEval's own prompts and its real detector; it has **not** been run by the authors yet (no GPU
# was available), so its runtime, memory and scores are unmeasured: the figures on this page are estimates.

# %% Colab only: fetch the repository and install it (does nothing elsewhere)
import os
import subprocess
import sys

# If Colab then says "You must restart the runtime" (pip replaced a package that was already imported), use
# Runtime > Restart session and run the notebook again from the top: the clone is kept, this cell skips the
# install, and the restarted kernel finds the editable install by itself.
if "google.colab" in sys.modules and not os.path.isdir("/content/reca_nb"):
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/YOUR-GITHUB-ACCOUNT/reca_nb", "/content/reca_nb"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/reca_nb"], check=True)
    sys.path.insert(0, "/content/reca_nb")
    print("reca_nb installed. If Colab asks to restart the session, accept, then run the notebook again from "
          "the top (this cell then skips the install).")

# %%
import time
from dataclasses import replace

import torch
from PIL import Image

from reca_nb import plotting
from reca_nb.adapters import load_adapters, read_meta
from reca_nb.evaluation import geneval_real
from reca_nb.memory import estimate_memory, format_memory
from reca_nb.models.real import janus_pro
from reca_nb.paths import cache_dir
from reca_nb.recipe import preset
from reca_nb.train import train
from reca_nb.world.folder import ImageFolder
from reca_nb.world.shapes import ShapeWorld

torch.manual_seed(0)
on_gpu = torch.cuda.is_available()

# %% tags=["parameters"]
TINY = not on_gpu  # offline / CI: tiny random Janus-Pro and OpenUni of the same classes; on a GPU: the real ones
MODEL_ID = janus_pro.MODEL_IDS["1b"]  # "7b" needs a 40 GB+ GPU for LoRA in bf16
IMAGE_FOLDER = None  # your pictures (recursive); None: a small demo folder of shape-world scenes is written
CAPTIONS = None  # optional .csv / .jsonl of (file, caption) for I2T mixing; sidecar .txt files also work
STEPS = 40 if TINY else 300  # RecA steps (paper: 1000-5000 full fine-tune steps on 8+ GPUs)
BATCH = 4  # RecA samples per step (+ as many I2T samples when captions exist)
LR = 1e-2 if TINY else 1e-4  # LoRA learning rate (the tiny random model needs a large one to move in 40 steps)
RUN_DIR = cache_dir() / "runs" / "nb07"
RUN_OPENUNI = True  # section 6: the OpenUni-style model (when reca_nb.models.real.openuni is installed)
GENEVAL_PER_TASK = 1 if TINY else 16  # GenEval prompts per task (stratified, fixed seed; 0 = all 553)
GENEVAL_IMAGES = 1 if TINY else 2  # images per prompt (GenEval's standard is 4; 2 halves the sampling time)

# %% [markdown]
# ## 1 · Your images
#
# RecA needs only images: the text of every sample is a random "describe the image" template. Captions are
# optional; when they exist the recipe mixes in I2T (practice 4), which Janus-Pro needs because its LLM is
# shared by understanding and generation. Without a folder of your own, we write a demo one: shape-world scenes
# with their descriptions as sidecar `.txt` captions, plus one deliberately truncated file.

# %%
size = 32 if TINY else 384  # Janus-Pro generates 384 px images
DEMO = IMAGE_FOLDER is None
if DEMO:
    IMAGE_FOLDER = cache_dir() / "demo_folder" / f"{size}px"
    IMAGE_FOLDER.mkdir(parents=True, exist_ok=True)
    world = ShapeWorld(24, seed=7, size=size, kind="random")
    for i in range(len(world)):
        item = world[i]
        pixels = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()  # (H, W, 3) uint8
        Image.fromarray(pixels).save(IMAGE_FOLDER / f"scene_{i:02d}.png")
        (IMAGE_FOLDER / f"scene_{i:02d}.txt").write_text(item["description"])
    good = (IMAGE_FOLDER / "scene_00.png").read_bytes()
    (IMAGE_FOLDER / "broken.png").write_bytes(good[: len(good) // 3])  # a truncated download

folder = ImageFolder(IMAGE_FOLDER, captions=CAPTIONS)
pool, captions = folder.pool(size, progress=False, warn=False)  # the report below says it once
print(folder.report())
plotting.image_grid(pool[:8], nrow=8, titles=[c or "" for c in captions[:8]], title="a few training images")

# %%
assert len(pool) == len(folder.files) - len(folder.skipped)  # broken files are skipped and counted, no crash
if DEMO:
    assert [p.name for p in folder.skipped] == ["broken.png"] and len(folder.captions) == 24

# %% [markdown]
# ## 2 · The model and its memory budget
#
# `janus_pro.load` wraps `JanusForConditionalGeneration` + `JanusProcessor` as a reca_nb UMM. The recipe is
# LoRA (rank 16) on every Linear layer of the LLM, with the generation embedding, aligner and head trained in
# full (they are small and they are exactly the path RecA trains). The estimate below counts weights, gradients,
# AdamW states and activations for one step. It is an **estimate**, ±50 % on activations.

# %%
timings = {}  # seconds per phase, printed at the end
t0 = time.time()
model = janus_pro.load(MODEL_ID, tiny=TINY)
timings["load Janus-Pro"] = time.time() - t0
recipe = replace(preset("janus-pro"), steps=STEPS, batch=BATCH, lr=LR, warmup=max(1, STEPS // 10), log_every=max(1, STEPS // 20))
if not folder.captions:  # nothing to mix in: RecA alone
    recipe = replace(recipe, lambda_i2t=0.0, i2t_ratio=0.0)
n_params = sum(p.numel() for p in model.parameters())
print(f"{'tiny random' if TINY else MODEL_ID}: {n_params / 1e6:.1f} M parameters, {model.dtype}, {model.device}, "
      f"loaded in {time.time() - t0:.0f} s")
print(f"images {model.image_size}px -> {model.n_gen} VQ codes; understanding {model.und_size}px -> {model.n_und} "
      "SigLIP tokens")
est = estimate_memory(model, recipe)
print(format_memory(est, gpu_gb=16))
full = estimate_memory(model, replace(recipe, freeze="none"))  # for exercise 2: a full fine-tune

# %%
assert est["trainable_params"] < 0.2 * est["params"]  # LoRA: a small fraction of the model trains
assert model.n_gen == model.n_und  # Janus-Pro: 576 SigLIP tokens in, 576 VQ codes out (16 and 16 when tiny)

# %% [markdown]
# One RecA sample, decoded: the condition h_v fills the image slots of a user turn whose text is a template,
# and the answer the model must produce is the image's own VQ codes.

# %%
text = model.format_reca_sample("Describe the image in detail.")
text = text.replace("<image_placeholder>" * model.n_und, f"<image_placeholder> x {model.n_und}")
print(text + f"  ->  {model.n_gen} VQ codes")

# %% [markdown]
# ## 3 · Before: GenEval on a stratified subset
#
# GenEval (Ghosh et al., 2023) asks for objects, two objects, counts, colours, positions and colour bindings,
# then checks each picture with an object detector: Mask2Former (Swin-S, COCO) finds the objects, CLIP ViT-L/14
# names their colours, and GenEval's rules decide (`reca_nb.evaluation.geneval_rules`). The score is the mean of the six
# task accuracies. `geneval_real` runs that protocol on transformers models: GenEval's own 553 prompts, here
# `GENEVAL_PER_TASK` of each task drawn with a fixed seed, each sampled with a seed fixed by the prompt, so the
# RecA model meets exactly the same prompts and seeds afterwards. Offline the prompts are a hand-made file of
# the same format and the detector is random.

# %%
records = list(geneval_real.EXAMPLE_METADATA) if TINY else geneval_real.official_metadata()
prompts = geneval_real.subset(records, GENEVAL_PER_TASK, seed=0)


def geneval(name):
    """Generate the subset with the current model, then score it with GenEval's detector; result rows."""
    t0 = time.time()
    images = geneval_real.generate(model, prompts, GENEVAL_IMAGES, seed=0, progress=False)
    timings[f"GenEval: generate ({name})"] = time.time() - t0
    t0 = time.time()
    scorer = geneval_real.load_scorer(tiny=TINY)  # loaded for scoring only: the GPU memory goes to training
    rows = geneval_real.score(scorer, [(i, rec, images[i]) for i, rec in prompts], progress=False)
    timings[f"GenEval: score ({name})"] = time.time() - t0
    del scorer
    if on_gpu:
        torch.cuda.empty_cache()
    return images, rows


before_images, before_rows = geneval("base")
print(f"{len(prompts)} prompts x {GENEVAL_IMAGES} image(s)"
      + (" (tiny random models: the numbers are meaningless)" if TINY else ""))
print(geneval_real.markdown({"base": geneval_real.summarize(before_rows)}))

# %%
assert sorted({r["tag"] for r in before_rows}) == sorted(geneval_real.TASKS)  # every task is in the subset
assert len(before_rows) == len(prompts) * GENEVAL_IMAGES

# %% [markdown]
# ## 4 · RecA + LoRA with the one training loop
#
# `train(..., data=folder.batches)` draws from the folder instead of shape world; everything else (accelerate,
# checkpoints, resume, the collapse monitor) is the loop every notebook uses. With `out_dir` a LoRA run also
# writes `adapters.safetensors`: the adapters plus the fully trained generation path.

# %%
t0 = time.time()
history = train(model, recipe, out_dir=RUN_DIR, data=folder.batches)
timings["RecA training"] = time.time() - t0
print(f"{STEPS} steps in {timings['RecA training']:.0f} s")
keys = ["loss_reca"] + (["loss_i2t"] if recipe.lambda_i2t else [])
plotting.plot_history(history, keys=keys, logy=True)

# %%
curve = [r["loss_reca"] for r in history]
assert curve[-1] < curve[0]  # the generation path learns to reconstruct from its own understanding

# %% [markdown]
# ## 5 · After: the same GenEval subset, the difference and its interval — then reload the adapters

# %%
after_images, after_rows = geneval("RecA")
cmp = geneval_real.compare(before_rows, after_rows)
print(geneval_real.markdown({"base": cmp["before"], "RecA (LoRA)": cmp["after"]}))
print(f"difference RecA - base: {cmp['delta']['overall']:+.3f}, {cmp['level']:.0%} paired bootstrap interval "
      f"[{cmp['interval'][0]:+.3f}, {cmp['interval'][1]:+.3f}] over {len(prompts)} prompts"
      + (" (tiny random models: meaningless)" if TINY else ""))
tasks = [t for t in geneval_real.TASKS if t in cmp["delta"]] + ["overall"]
plotting.plot_bars({t: {"base": cmp["before"]["scores"][t], "RecA": cmp["after"]["scores"][t]} for t in tasks},
                   title="GenEval subset: base vs RecA (same prompts, same seeds)", ylabel="accuracy")

# %%
assert [(r["index"], r["image"]) for r in before_rows] == [(r["index"], r["image"]) for r in after_rows]
assert cmp["interval"][0] <= cmp["delta"]["overall"] <= cmp["interval"][1]

# %% [markdown]
# The first picture of each prompt, before and after (the same seed in each column):

# %%
shown = prompts[:8]
plotting.image_grid(torch.cat([before_images[i][:1] for i, _ in shown] + [after_images[i][:1] for i, _ in shown]),
                    nrow=len(shown), titles=[rec["prompt"] for _, rec in shown] * 2,
                    title="top: base · bottom: after RecA (same prompts, same seeds)")

# %% [markdown]
# Offline the tiny model and the detector are random, so the pictures are noise and the scores say nothing;
# the point is that every call runs. On a GPU, look for the paper's pattern: colours bound to the right object
# and positions followed more often. Read the interval before the difference: with 16 prompts per task it is
# wide, and a difference whose interval contains 0 is not evidence either way. The full benchmark (553 prompts
# x 4 images) and any other model's images (a folder in GenEval's layout) go through the command line, e.g.
# `python -m reca_nb.evaluation.geneval_real --model=janus-pro --adapters=RUN_DIR --n_per_task=0 --images_per_prompt=4`.
# For reference, the Janus-Pro paper (arXiv 2501.17811) reports GenEval 0.80 for Janus-Pro-7B with GenEval's
# mmdetection scorer; this port uses Meta's Mask2Former weights, so expect small shifts.
#
# The adapters file is all you need to keep (megabytes, not gigabytes). Put it back on a fresh base model and
# the samples are the trained model's samples:

# %%
meta = read_meta(RUN_DIR / "adapters.safetensors")
print(f"adapters: {meta['n_params'] / 1e6:.2f} M values, rank {meta['r']}, "
      f"{len(meta['targets'])} LoRA targets, {len(meta['full'])} fully trained tensors, "
      f"{(RUN_DIR / 'adapters.safetensors').stat().st_size / 1e6:.1f} MB")
trained_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
del model
if on_gpu:
    torch.cuda.empty_cache()
model = load_adapters(janus_pro.load(MODEL_ID, tiny=TINY), RUN_DIR / "adapters.safetensors")
reloaded = geneval_real.generate(model, prompts[:4], GENEVAL_IMAGES, seed=0, progress=False)

# %%
worst = max((v.detach().cpu().float() - trained_state[k].float()).abs().max().item()
            for k, v in model.state_dict().items())
print(f"largest weight difference after reloading: {worst:.2e}")
assert worst < (1e-5 if model.dtype == torch.float32 else 1e-2)
gap = torch.cat([reloaded[i] - after_images[i] for i, _ in prompts[:4]]).abs().mean()
assert gap < 0.05  # the same pictures for the same seeds (bf16 merges may flip a rare token)

# %% [markdown]
# ## 6 · An OpenUni-style model from real parts
#
# OpenUni (RecA Table 1) is *decoupled*: a frozen VLM reads the image, learnable queries carry its
# understanding to a SANA diffusion transformer that denoises DC-AE latents. Practice 3 says freeze
# understanding; no I2T is needed. `reca_nb.models.real.openuni` builds it from `transformers` and `diffusers` parts;
# the same loop trains it.

# %%
if RUN_OPENUNI:
    from IPython.display import display

    from reca_nb.models.real import openuni as real_openuni

    del model
    if on_gpu:
        torch.cuda.empty_cache()
    ou = real_openuni.load(tiny=TINY)
    # OpenUni's recipe: frozen VLM (practice 3), no I2T term; a quarter of Janus-Pro's steps
    ou_recipe = replace(preset("openuni-real"), steps=max(4, STEPS // 4), batch=BATCH, lr=1e-3 if TINY else 1e-5)
    print(format_memory(estimate_memory(ou, ou_recipe), gpu_gb=16))

    ou_prompts = [rec["prompt"] for _, rec in prompts[:4]]

    def ou_samples():
        ou.eval()
        return ou.sample(ou_prompts, generator=torch.Generator(device=ou.device).manual_seed(0)).cpu()

    ou_before = ou_samples()
    ou_history = train(ou, ou_recipe, out_dir=RUN_DIR / "openuni", data=folder.batches)
    ou_after = ou_samples()
    assert all(torch.isfinite(torch.tensor(r["loss_reca"])) for r in ou_history)
    display(plotting.image_grid(torch.cat([ou_before, ou_after]), nrow=4, titles=ou_prompts * 2,
                                title="OpenUni-style · top: before · bottom: after RecA"))
else:
    print("skipped: RUN_OPENUNI = False")

# %% [markdown]
# ## Time per phase
# Measured in this run (on CPU with tiny models they only show where the time goes; on a T4 they are the
# numbers to plan by).

# %%
for phase, sec in timings.items():
    print(f"{phase:<28} {sec:8.1f} s")
assert {"load Janus-Pro", "RecA training", "GenEval: generate (base)", "GenEval: score (RecA)"} <= set(timings)

# %% [markdown]
# ## Summary
# - Real checkpoints use the same `train()` as the miniatures: a UMM wrapper (`janus_pro.load`) plus an image
#   folder (`ImageFolder(...).batches`) is all that changes.
# - For Janus-Pro the RecA condition is the SigLIP path's output in the image slots of a chat turn with a
#   template; the target is the image's VQ codes (different spaces: the natural bottleneck); I2T is mixed in
#   because the LLM is shared.
# - LoRA keeps the trainable part small; the memory estimate says whether a step fits before it is run; the
#   adapters file reproduces the trained model exactly.
# - GenEval's protocol on transformers parts scores base and RecA on the same prompts and seeds; the paired
#   bootstrap interval says how much of the difference is sampling noise.
#
# ## Exercises
# 1. **Knob: `IMAGE_FOLDER`.** Point it at a folder of your own photos (a few hundred is plenty for a first run)
#    and compare the before/after grids.
# 2. **Knob: `recipe.freeze`.** `"none"` is a full fine-tune: read the memory estimate first. What dominates?
# 3. **Knob: `recipe.lambda_i2t`.** Set it to 0 with captions present and caption a few images before and after
#    (`model.caption(images)`). Does understanding drift?

# %%
# Solution check for exercise 2's premise: a full fine-tune trains every parameter outside the frozen VQ-VAE,
# so gradients and AdamW states grow with the whole model
assert full["trainable_params"] > 2 * est["trainable_params"] and full["adam"] > 2 * est["adam"]
