"""Memory and time of one LoRA RecA step on Janus-Pro-1B and OpenUni-B at their real sizes, next to the estimate.

    python benchmarks/real_memory.py [--models=janus-pro,openuni-real] [--device=auto|cpu|cuda]
                                     [--dtypes=auto|float32,bfloat16,float16] [--batch=0] [--steps=1]
                                     [--warmup=0] [--threads=2] [--size=real|tiny] [--out=results/bench.md]

Nothing is downloaded: each model is built from its published configuration with random weights (speed and
memory do not depend on the weight values), with the same classes `reca_nb.models.real.janus_pro` /
`reca_nb.models.real.openuni` load from the hub, and an offline stand-in tokenizer (its longer byte-level /
word-level texts add a few dozen tokens to sequences of ~1,200 / ~300). Each (model, dtype, device) runs in its
own subprocess, so its peak is its own:
  Janus-Pro-1B   JanusForConditionalGeneration: LLaMA LLM 2048 wide, 24 layers, 16 heads, MLP 5632, vocabulary
                 102,400, untied LM head (2.08 B parameters in all); SigLIP-L/16 at 384 px (576 tokens); VQ
                 16,384 codes, 24 x 24 grid (transformers' Janus vision / VQ defaults are Janus-Pro's).
                 Recipe: `preset("janus-pro")` (LoRA r=16 on the LLM + full generation head, RecA + I2T 1:1,
                 gradient checkpointing), I2T captions of 64 tokens.
  OpenUni-B      InternVL3-1B (InternViT-300M at 448 px + a Qwen2.5-0.5B LLM: 896 wide, 24 layers, 14 heads,
                 2 KV heads, MLP 4864, vocabulary 151,674), 256 queries + a 6-layer connector, SANA-0.6B at
                 512 px (1152 wide, 28 layers), DC-AE f32c32. Recipe: LoRA r=16 on the DiT and connector,
                 queries in full, understanding frozen (practice 3), RecA only.
Columns: `estimate` is `reca_nb.memory.estimate_memory` for that model and recipe (what the notebooks print
before training); `measured` is torch.cuda.max_memory_allocated over the timed steps on a GPU, or on the CPU the
worker's peak resident set (VmHWM) over them, which also holds the Python/torch runtime; `ratio` = measured /
estimate; `s/step` is the mean wall time of the timed steps (with --warmup=0 it includes train()'s set-up);
`held before training` is what the process held just before train() (weights, runtime). --batch=0 keeps the
recipe's batch (4). On a CPU without bf16 hardware only float32 is useful (`auto`), and a real-size step takes
minutes.
"""
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

DEFAULTS = {"models": "janus-pro,openuni-real", "device": "auto", "dtypes": "auto", "batch": 0, "steps": 1,
            "warmup": 0, "threads": 2, "size": "real", "out": ""}
MODELS = ("janus-pro", "openuni-real")
GB = 1024 ** 3


# ----------------------------------------------------------------------------- the models at real size

def janus_pro_1b_config(image_token_id: int):
    """transformers' JanusConfig at Janus-Pro-1B's sizes (its vision and VQ defaults are Janus-Pro's)."""
    from transformers import JanusConfig

    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=102400, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                         max_position_embeddings=16384),
        tie_word_embeddings=False, image_token_id=image_token_id)


def janus_pro_1b(dtype: str, device: str, size: str):
    """Janus-Pro-1B's architecture with random weights (size="tiny": the offline tiny twin)."""
    import torch
    from transformers import JanusForConditionalGeneration

    from reca_nb.models.real import janus_pro

    if size == "tiny":
        return janus_pro.load(tiny=True, dtype=dtype, device=device)
    cfg = janus_pro.JanusProConfig(model_id="random Janus-Pro-1B", dtype=dtype, tiny_image_size=384,
                                    tiny_patch=16, gradient_checkpointing=True)
    processor = janus_pro.tiny_processor(cfg)  # byte-level stand-in at 384 px, 576 image tokens
    torch.manual_seed(0)
    hf = JanusForConditionalGeneration(janus_pro_1b_config(processor.tokenizer.convert_tokens_to_ids(
        janus_pro.IMAGE)))
    return janus_pro.JanusPro(cfg, hf=hf, processor=processor, device=device)


def openuni_b_parts(tok):
    """InternVL3-1B, SANA-0.6B (512 px) and DC-AE f32c32 modules at their published sizes, random weights."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    vlm = InternVLForConditionalGeneration(InternVLConfig(  # vision defaults = InternViT-300M at 448 px
        text_config=dict(model_type="qwen2", vocab_size=151674, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>")),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=256, downsample_ratio=0.5))
    dit = SanaTransformer2DModel(in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32,
                                 num_layers=28, num_cross_attention_heads=16, cross_attention_head_dim=72,
                                 cross_attention_dim=1152, caption_channels=2304, mlp_ratio=2.5, sample_size=16,
                                 patch_size=1)
    vit = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    vae = AutoencoderDC(encoder_block_types=vit, decoder_block_types=vit,
                        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 3,
                        decoder_act_fns=("relu",) * 3 + ("silu",) * 3, scaling_factor=0.41407)
    return vlm, dit, vae


def openuni_b(dtype: str, device: str, size: str):
    """OpenUni-B's parts with random weights (size="tiny": the offline tiny twin)."""
    import torch

    from reca_nb.models.real import openuni as real_openuni

    if size == "tiny":
        return real_openuni.load(tiny=True, dtype=dtype, device=device)
    cfg = real_openuni.OpenUniRealConfig(vlm_id="random InternVL3-1B", dit_id="random SANA-0.6B",
                                         vae_id="random dc-ae-f32c32", dtype=dtype)
    tok = real_openuni.tiny_tokenizer(cfg)
    torch.manual_seed(0)
    return real_openuni.OpenUniReal(cfg, device=device, parts=(tok, *openuni_b_parts(tok)))


def recipe_for(name: str, model, batch: int, steps: int):
    from reca_nb.recipe import Recipe, preset

    if name == "janus-pro":
        r = replace(preset("janus-pro"), steps=steps, warmup=0, log_every=1)
    else:
        r = Recipe(arch=model.arch, stage="reca", und_res=0, freeze="lora", lora_r=16, lambda_reca=1.0,
                   lambda_i2t=0.0, lambda_t2i=0.0, i2t_ratio=0.0, lr=1e-4, warmup=0, steps=steps, batch=4,
                   eval_every=0, save_every=0, log_every=1)
    return replace(r, batch=batch) if batch else r


def image_folder(root: Path, size: int, n: int = 8, caption_tokens: int = 64) -> Path:
    """n noise images at `size` px with sidecar captions of `caption_tokens` characters (= byte-level tokens)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(("a photo of noise " * 8)[:caption_tokens])
    return root


# ----------------------------------------------------------------------------- one measurement (subprocess)

def worker(name: str, cfg: dict) -> dict:
    import torch
    from arch_throughput import _peak_rss, _reset_peak_rss

    from reca_nb.world.folder import ImageFolder
    from reca_nb.memory import estimate_memory
    from reca_nb.train import train

    torch.set_num_threads(cfg["threads"])
    device, cuda = cfg["device"], cfg["device"] == "cuda"
    t0 = time.perf_counter()
    model = (janus_pro_1b if name == "janus-pro" else openuni_b)(cfg["dtype"], device, cfg["size"])
    build_s = time.perf_counter() - t0
    w, n = cfg["warmup"], cfg["steps"]
    recipe = replace(recipe_for(name, model, cfg["batch"], w + n), device=device)
    est = estimate_memory(model, recipe)
    with tempfile.TemporaryDirectory() as tmp:
        folder = ImageFolder(image_folder(Path(tmp), model.image_size))
        folder.pool(model.image_size, progress=False, warn=False)
        stamps = []

        def clock(row, _model):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss0 = _reset_peak_rss()
        before = torch.cuda.memory_allocated() if cuda else rss0 * 2**20
        start = time.perf_counter()
        history = train(model, recipe, progress=False, callbacks=[clock], data=folder.batches)
    rss1 = _peak_rss()
    rows = [r for r in history if "loss" in r]
    timed = stamps[-n:] if len(stamps) >= n else stamps
    t_first = stamps[w - 1] if w else start
    return {
        "model": name, "size": cfg["size"], "device": device, "dtype": cfg["dtype"],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": est["trainable_params"] / 1e6, "batch": recipe.batch,
        "i2t_batch": recipe.i2t_batch if "i2t" in recipe.active_terms else 0, "steps": n, "warmup": w,
        "build_s": build_s, "s_per_step": (timed[-1] - t_first) / max(1, len(timed)) if timed else None,
        "estimate_gb": est["total"] / GB, "estimate_no_overhead_gb": (est["total"] - est["overhead"]) / GB,
        "measured_gb": (torch.cuda.max_memory_allocated() if cuda else rss1 * 2**20) / GB,
        "measured_kind": "cuda max_memory_allocated" if cuda else "peak RSS (VmHWM)",
        "before_gb": before / GB, "last_loss": rows[-1]["loss"] if rows else None,
        "threads": cfg["threads"], "torch": torch.__version__,
    }


# ----------------------------------------------------------------------------- table and driver

def table(results: list) -> tuple:
    header = ["model", "device", "dtype", "params", "trainable", "batch (RecA+I2T)", "estimate GB", "measured GB",
              "measured / estimate", "s/step", "held before training GB"]
    rows = [[r["model"] + ("" if r["size"] == "real" else " (tiny)"), r["device"], r["dtype"],
             f"{r['params_m'] / 1e3:.2f} B" if r["params_m"] > 1e3 else f"{r['params_m']:.1f} M",
             f"{r['trainable_m']:.2f} M", f"{r['batch']}+{r['i2t_batch']}", f"{r['estimate_gb']:.2f}",
             f"{r['measured_gb']:.2f}", f"{r['measured_gb'] / r['estimate_gb']:.2f}",
             "n/a" if r["s_per_step"] is None else f"{r['s_per_step']:.3g}", f"{r['before_gb']:.2f}"]
            for r in results]
    return header, rows


def parse(argv) -> dict:
    from reca_nb.config import parse_overrides

    args = parse_overrides(argv)
    cfg = {**DEFAULTS, **args}
    unknown = set(cfg) - set(DEFAULTS) - {"_worker", "dtype"}
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    if cfg["device"] not in ("cpu", "cuda", "auto"):
        raise SystemExit(f"--device must be cpu, cuda or auto, got {cfg['device']!r}")
    if cfg["size"] not in ("real", "tiny"):
        raise SystemExit(f"--size must be real or tiny, got {cfg['size']!r}")
    names = [m.strip() for m in str(cfg["models"]).split(",")]
    bad = [m for m in names if m not in MODELS]
    if bad:
        raise SystemExit(f"unknown model(s) {bad}; valid: {', '.join(MODELS)}")
    cfg["models"] = names
    if int(cfg["steps"]) < 1:
        raise SystemExit("--steps must be at least 1")
    return cfg


def main(argv):
    cfg = parse(argv)
    if "_worker" in cfg:  # inside the subprocess: one JSON line on stdout
        print("RESULT " + json.dumps(worker(cfg.pop("_worker"), cfg)), flush=True)
        return None
    import torch
    from bench_report import machine_line, publish, run_worker

    devices = [cfg["device"]] if cfg["device"] != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = []
    for dev in devices:
        dtypes = str(cfg["dtypes"]).split(",")
        if dtypes == ["auto"]:  # CPU: float32; GPU: bf16 and fp16 (a T4 has no bf16)
            dtypes = ["float32"] if dev == "cpu" else ["bfloat16", "float16"]
        jobs += [(m, dev, dt) for m in cfg["models"] for dt in dtypes]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "HF_HUB_OFFLINE": "1"}
    keep = [f"--{k}={cfg[k]}" for k in ("batch", "steps", "warmup", "threads", "size")]
    print(f"one LoRA RecA step at {cfg['size']} size: {cfg['warmup']} warm-up + {cfg['steps']} timed step(s), "
          f"threads={cfg['threads']}", flush=True)
    results = []
    for name, dev, dt in jobs:
        t = time.perf_counter()
        r = run_worker(__file__, [f"--_worker={name}", f"--device={dev}", f"--dtype={dt}", *keep], env,
                       f"{name} ({dev}, {dt})")
        if r is None:
            continue
        results.append(r)
        print(f"  {name:<12} {dev:<4} {dt:<8} estimate {r['estimate_gb']:6.2f} GB  measured {r['measured_gb']:6.2f} GB"
              f" ({r['measured_kind']})  {r['s_per_step'] or 0:7.3g} s/step  [{time.perf_counter() - t:.0f} s in all]",
              flush=True)
    header, rows = table(results)
    intro = ("## Real-size memory: one LoRA RecA step (Janus-Pro-1B, OpenUni-B)\n\n`python "
             f"benchmarks/real_memory.py` ({machine_line(cfg['threads'])}; random weights at the published "
             "sizes). measured = CUDA max_memory_allocated on a GPU, peak resident set on the CPU (runtime "
             "included); estimate = `reca_nb.memory.estimate_memory` (1 GB + 10 % CUDA overhead included).")
    publish(cfg["out"], "real_memory", intro, header, rows, failed=len(jobs) - len(results))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
