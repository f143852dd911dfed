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
# # 08 · RecA's premise: a generator that already reads its understanding space
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-ACCOUNT/reca_nb/blob/main/notebooks/08_the_premise.ipynb)
#
# **What you will learn**
# - what RecA takes for granted: its condition is the model's own *understanding embedding* of an image, so it
#   can only pass understanding's knowledge on if the generator can already *read* that embedding;
# - two measurements that tell whether a base has that premise: **reconstruction** from its own embedding at
#   the bottleneck (GenEval-mini rule on the reconstructed scene; chance ≈ 0.23, gate 0.5) and the **prompt
#   gap** (how much its T2I loss depends on the true prompt);
# - what RecA does *without* the premise, live: the text route erodes while reconstruction stays near chance;
# - what it did on a base that was pretrained to partly read its und space (BAGEL mini, base (b)): it learns
#   to read the embedding, and T2I still falls — the **honest negative** behind claim 1 in this miniature.
#
# **Why this notebook exists.** RecA's headline — it improves T2I — does not reproduce on the six miniatures
# (`results/claims.md`, claim 1). The diagnosis (issue 19, `results/premise.md`): in the real UMMs the
# generator reads understanding tokens *before* RecA (BAGEL's generation expert sees ViT tokens of context
# images in interleaved and editing pretraining data; Harmon's one encoder serves both sides), so RecA refines
# a reading. The shipped miniature bases never saw such data, so RecA has to *create* a reading.
#
# **Prerequisites**: notebooks 01 and 04. Paper: RecA §3 (the condition), §4.2 (gains by category).
# **Runtime**: CPU ≈ 55 s (measured by `make bench`, results/bench.md).

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
import json
import random

import torch
from IPython.display import Markdown

from reca_nb import plotting
from reca_nb.models import registry
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import Recipe, mini_und_res
from reca_nb.reproduce import premise
from reca_nb.world import prompts
from reca_nb.world.shapes import ShapeWorld

torch.manual_seed(0)
RUNS = REPO_ROOT / "results" / "premise_runs"  # recorded runs of `python -m reca_nb.reproduce.premise`

# %% tags=["parameters"]
ARCH = "bagel"  # the cheapest decoupled mini; its understanding side is frozen during RecA (practice 3)
STEPS = 40  # live RecA steps (the recorded runs below did 200, the claims-table recipe)
TRACK_EVERY = 20  # measure the premise every N steps (and before training)
EVAL_PER_CATEGORY = 4  # GenEval-mini scenes per category for the live reconstruction score (recorded: 30)

# %% [markdown]
# ## 1 · The two measurements on the shipped base
#
# `premise.post_train` runs the same RecA recipe that `python -m reca_nb.reproduce` runs for claim 1
# (condition: the model's own und embedding at the 16-px bottleneck plus a random template — no captions),
# and with `track_every` it measures, before training and every few steps:
# - `recon.spec`: reconstruct each GenEval-mini eval scene from the model's own embedding of its 16-px render,
#   then score the result with the scene's GenEval rule;
# - `prompt_gap.gap`: (L shuffled − L true) / L shuffled of the T2I generation loss on held-out pairs, the same
#   noise for both — 0 means the generator ignores its text.

# %%
model = registry.load_base(ARCH)
cfg = premise.PremiseConfig(arch=ARCH, arm="reca", steps=STEPS, track_every=TRACK_EVERY,
                            eval_per_category=EVAL_PER_CATEGORY, gap_n=128, gap_draws=2)
und_res = mini_und_res(ARCH, model.image_size)

# a few eval scenes, reconstructed from the base's own embedding before RecA
scenes = ShapeWorld(6, seed=10_000, size=model.image_size, kind="prompted")
truth = scenes.images()
templates = prompts.sample_templates(len(truth), rng=random.Random(0))
und = Recipe(und_res=und_res).und_transform(truth)


def reconstruct(m):
    m.eval()
    with torch.no_grad():
        return m.reconstruct(und, templates, generator=torch.Generator().manual_seed(0))


before = reconstruct(model)
live = premise.post_train(model, cfg)  # trains `model` in place
after = reconstruct(model)
traj = live["trajectory"]
for row in traj:
    print(f"step {row['step']:3d}: recon spec {row['recon']['spec']:.2f}   prompt gap "
          f"{row['prompt_gap']['gap']:.3f} ± {row['prompt_gap']['gap_std']:.3f}")
print(f"{STEPS} RecA steps in {live['train_s']:.0f} s (measurements included)")

# %%
plotting.plot_premise({f"shipped {ARCH} base, live": traj}, title=f"{STEPS} RecA steps without the premise")

# %% [markdown]
# The shipped base reads its own embedding at chance, and RecA's first steps mostly teach the generator to
# lean on the embedding instead of the text: the prompt gap falls fast. Checked:

# %%
gap0, gap1 = traj[0]["prompt_gap"], traj[-1]["prompt_gap"]
assert [r["step"] for r in traj] == list(range(0, STEPS + 1, TRACK_EVERY))
assert gap1["gap"] < gap0["gap"] - 3 * max(gap0["gap_std"], gap1["gap_std"]), "the text route did not erode"
assert all(r["recon"]["spec"] < plotting.RECON_GATE for r in traj), "a reading appeared: the premise is met"

# %%
plotting.image_grid(torch.cat([truth, before, after]), nrow=len(truth),
                    titles=[f"scene {i}" for i in range(len(truth))] + ["base"] * len(truth)
                    + [f"RecA {STEPS}"] * len(truth),
                    title="eval scenes (top), reconstructed from the model's own 16-px und embedding")

# %% [markdown]
# ## 2 · Recorded: 200 steps on the shipped base and on a base that partly reads its und space
#
# Base (b) (`results/premise.md`) was pretrained with two world options the issue derived from how real UMMs
# are trained: I2T captions that state relations, counts and colour bindings in the eval's words, sparser
# alt-text-like T2I prompts, and — in 25 % of T2I samples — the und tokens of a *different, jittered render*
# of the same scene as extra condition (what interleaved / editing data gives real BAGEL). Its gate: recon
# spec 0.31 (shipped 0.17, chance 0.23) — better, but **below the 0.5 gate**. The RecA curves come from
# `python -m reca_nb.reproduce.premise --arm=reca --track_every=...` (one thread, seed 0); the T2I-only control (same steps,
# same trainable parameters, T2I loss only) was measured before and after. The shipped run was scored with
# today's GenEval-mini detector, base (b)'s with the previous one (`results/premise.md`): the prompt gap does not
# use the detector, the reconstruction score does.

# %%
shipped = json.loads((RUNS / "shipped-reca-s0.json").read_text())
b_gate = json.loads((RUNS / "b-base-s0.json").read_text())  # the gate measurement of base (b) = its step 0
b_reca = json.loads((RUNS / "b-reca-s0.json").read_text())
b_t2i = json.loads((RUNS / "b-t2i-s0.json").read_text())  # same steps and parameters, T2I loss only
b_start = {"step": 0, "recon": b_gate["recon"], "prompt_gap": b_gate["prompt_gap"]}
b_traj = [b_start] + b_reca["trajectory"]
t2i_traj = [b_start, {"step": 200, "recon": b_t2i["recon"], "prompt_gap": b_t2i["prompt_gap"]}]
plotting.plot_premise({"shipped base, RecA": shipped["trajectory"], "base (b), RecA": b_traj,
                       "base (b), T2I-only control": t2i_traj}, title="BAGEL mini, 200 steps (recorded)")

# %%
s0, s1, b0, b1 = shipped["trajectory"][0], shipped["trajectory"][-1], b_traj[0], b_traj[-1]
print(f"shipped : recon {s0['recon']['spec']:.2f} -> {s1['recon']['spec']:.2f}, "
      f"gap {s0['prompt_gap']['gap']:.2f} -> {s1['prompt_gap']['gap']:.2f}, GenEval-mini {shipped['t2i']['overall']:.3f}")
print(f"base (b): recon {b0['recon']['spec']:.2f} -> {b1['recon']['spec']:.2f}, "
      f"gap {b0['prompt_gap']['gap']:.2f} -> {b1['prompt_gap']['gap']:.2f}, GenEval-mini {b_reca['t2i']['overall']:.3f}")
# both bases: RecA erodes the text route
assert s1["prompt_gap"]["gap"] < s0["prompt_gap"]["gap"] and b1["prompt_gap"]["gap"] < b0["prompt_gap"]["gap"]
# base (b) starts below the gate and RecA teaches it to read its embedding well past it; the shipped base
# never gets there
assert b0["recon"]["spec"] < plotting.RECON_GATE < b1["recon"]["spec"]
assert max(r["recon"]["spec"] for r in shipped["trajectory"]) < plotting.RECON_GATE
# the matched control: the same 200 steps with the T2I loss alone move neither number as RecA does
c1 = t2i_traj[-1]
print(f"base (b), T2I-only: recon {b0['recon']['spec']:.2f} -> {c1['recon']['spec']:.2f}, "
      f"gap {b0['prompt_gap']['gap']:.2f} -> {c1['prompt_gap']['gap']:.2f}, GenEval-mini {b_t2i['t2i']['overall']:.3f}")
assert c1["recon"]["spec"] < plotting.RECON_GATE < b1["recon"]["spec"]
assert c1["prompt_gap"]["gap"] > b1["prompt_gap"]["gap"] + 2 * max(c1["prompt_gap"]["gap_std"], b1["prompt_gap"]["gap_std"])

# %% [markdown]
# ## 3 · Claim 1 on base (b): three arms × three seeds, the pre-registered rule
#
# Fixed before the runs (`results/premise.md`): the untouched base, RecA (the claims-table recipe) and a
# same-steps **T2I-only** control (same trainable parameters, only the T2I loss), seeds 0–2, GenEval-mini 180
# prompts; verdict = `reproduce.verdict` (Welch SE; "reproduced" iff the difference exceeds max(2 SE, 0.02) in
# the paper's direction), overall first, per category second. `python -m reca_nb.reproduce.premise
# --verdict=results/premise_runs/b` prints the same table. These runs were scored with the previous
# GenEval-mini detector (sha256 3247a97c…; it was retrained since, `data/scorer/README.md`); they cannot be
# re-scored (base (b)'s checkpoint is not shipped), so they were replicated instead — below the table.

# %%
rows = premise.verdict_table(RUNS / "b")
Markdown(premise.verdict_markdown(rows))

# %%
overall = {r["b"]: r for r in rows if r["metric"] == "overall"}
assert overall["base"]["verdict"] == overall["t2i"]["verdict"] == "not reproduced"
assert not any(r["verdict"] == "reproduced" for r in rows)  # no category where RecA wins either
print(f"RecA − base {overall['base']['diff']:+.3f} ± {overall['base']['se']:.3f}; "
      f"RecA − T2I-only {overall['t2i']['diff']:+.3f} ± {overall['t2i']['se']:.3f}")

# %% [markdown]
# **A replication with today's detector.** Base (b) was pretrained again with the same command and the nine
# runs repeated (`results/premise_runs/b2-*`, pre-registered in `results/premise.md`; CPU training is not
# bit-reproducible, so this is a second base (b), not a re-score):

# %%
rows2 = premise.verdict_table(RUNS / "b2")
overall2 = {r["b"]: r for r in rows2 if r["metric"] == "overall"}
print(f"replication: RecA − base {overall2['base']['diff']:+.3f} ± {overall2['base']['se']:.3f}; "
      f"RecA − T2I-only {overall2['t2i']['diff']:+.3f} ± {overall2['t2i']['se']:.3f}")
assert overall2["base"]["verdict"] == overall2["t2i"]["verdict"] == "not reproduced"
assert not any(r["verdict"] == "reproduced" for r in rows2)
assert json.loads((RUNS / "b2-base-s0.json").read_text())["recon"]["spec"] < plotting.RECON_GATE  # gate not met

# %% [markdown]
# **The honest negative.** On base (b) RecA does what the paper says it does to the generator — it learns to
# reconstruct from the understanding embedding (spec 0.31 → 0.83 in 200 steps) — and T2I still falls, below
# both the base and the same-steps T2I-only control, in every category that moves. The precondition was not
# met before RecA (0.31 < 0.5), so this is *not* a test of the paper's claim; it says what happens when RecA
# must build the reading itself: the RecA loss can be lowered through the embedding alone, and the text route
# that T2I needs erodes meanwhile (prompt gap 0.39 → 0.28). A base that passes the gate has not been built yet.
#
# ## Summary
# - RecA's condition is the model's own understanding embedding; it can only carry understanding's knowledge
#   into generation if the generator already reads that embedding — the premise.
# - Two numbers check it before any RecA run: reconstruction from the own embedding (gate 0.5; chance 0.23) and
#   the prompt gap.
# - Without the premise (shipped bases), RecA's first steps erode the text route while reconstruction stays near
#   chance (0.16 → 0.32 in 200 steps, below the gate). With a partial premise (base (b)), RecA builds the
#   reading, yet T2I falls: claim 1 is not reproduced here, against the base and against a same-steps T2I-only
#   control, in two independent base (b) pretrainings (scored with the previous and with the current detector).
#
# ## Exercises
# 1. **Knob: `STEPS`.** Run 80 live steps: does the shipped base's reconstruction leave chance, and where is the
#    prompt gap then?
# 2. **Knob: the control.** `premise.PremiseConfig(arm="t2i", ...)` trains the same steps with the T2I loss
#    only. Track it: does its prompt gap fall too?
# 3. **Reading the table.** Which categories does the paper expect to gain most (§4.2), and what does base (b)
#    show there?

# %%
# Check for exercise 3: the paper's largest gains are position and colour attribution; on base (b) RecA loses
# position (not reproduced) and colour attribution stays at the floor for every arm
by = {(r["metric"], r["b"]): r for r in rows}
assert by["position", "base"]["verdict"] == "not reproduced"
assert max(by["color_attr", "base"]["mean_a"], by["color_attr", "base"]["mean_b"]) < 0.05
