"""benchmarks/real_memory.py: the real-size configurations have the published sizes, and the whole measurement
runs end to end on the tiny twins (the real-size run is minutes per step: results/bench.md)."""
import subprocess
import sys

import pytest
import torch

from reca_nb.paths import REPO_ROOT

BENCH = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import real_memory  # noqa: E402


def _billions(*modules) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e9


def test_real_size_configs_have_the_published_sizes():
    from transformers import JanusForConditionalGeneration

    from reca_nb.models.real import openuni as real_openuni

    with torch.device("meta"):  # shapes only: no memory, no time
        janus = JanusForConditionalGeneration(real_memory.janus_pro_1b_config(image_token_id=3))
        vlm, dit, vae = real_memory.openuni_b_parts(real_openuni.tiny_tokenizer(real_openuni.OpenUniRealConfig()))
    # Janus-Pro-1B: 2.09 B on its model card; SANA-0.6B: 0.59 B; InternVL3-1B = InternViT-300M + Qwen2.5-0.5B
    assert 2.0 < _billions(janus) < 2.2
    assert janus.lm_head.weight is not janus.model.language_model.embed_tokens.weight
    assert (janus.config.vision_config.image_size, janus.config.vq_config.num_embeddings) == (384, 16384)
    assert 0.55 < _billions(dit) < 0.65
    assert 0.29 < _billions(vlm.model.vision_tower) < 0.32 and 0.45 < _billions(vlm.model.language_model) < 0.52
    assert vae.config.latent_channels == 32 and len(vae.config.encoder_block_out_channels) == 6  # f32c32


def _run(*args):
    return subprocess.run([sys.executable, str(BENCH / "real_memory.py"), *args], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_tiny_run_prints_measured_next_to_estimate():
    r = _run("--size=tiny", "--device=cpu", "--threads=1", "--steps=2", "--warmup=1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "(tiny)" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["janus-pro (tiny)", "openuni-real (tiny)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        estimate, measured, ratio = float(cells[6]), float(cells[7]), float(cells[8])
        assert estimate > 1.0 and measured > 0.1  # GB: the estimate holds 1 GB of CUDA overhead
        # the three cells are rounded separately (2 decimals): the ratio of the rounded cells can differ by 0.01+
        assert ratio == pytest.approx(measured / estimate, abs=0.02)
        assert float(cells[9]) > 0  # s/step
        assert 0 < float(cells[10]) <= measured  # what the process held before training: part of the peak


def test_bad_options_are_one_line_errors():
    r = _run("--models=janus-pro,dalle")
    assert r.returncode != 0 and "unknown model(s) ['dalle']" in r.stderr
    r = _run("--stepz=2")
    assert r.returncode != 0 and "unknown option(s) ['stepz']" in r.stderr
