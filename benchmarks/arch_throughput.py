"""RecA step throughput and peak memory per architecture: reca_nb.train.train() on a fresh model, preset "reca".

    python benchmarks/arch_throughput.py [--archs=all|showo-vq,janus] [--steps=10] [--warmup=2] [--threads=1]
                                         [--device=auto|cpu|cuda] [--out=results/bench.md]

Each architecture runs in its own subprocess (so peak memory is its own): build the model from its config
(registry.build, seed 0), render the data pool, then train() with preset(arch, "reca") -- its batch, its I2T mix,
its freeze policy -- for `warmup` + `steps` optimizer steps with no eval and no checkpoints. Only the last
`steps` steps are timed. Columns:
  samples/s   RecA targets + I2T images per second (the loop's own samples_per_s definition)
  img tok/s   RecA target images per second x generation tokens per image (the image tokens the generator
              predicts: Show-o 8x8 VQ codes, Janus 4x4 VQ codes, Harmon / BAGEL / OpenUni 8x8 latents)
  peak RSS    the worker's peak resident set during the timed train() call, MB (Linux: VmHWM, reset just
              before it; elsewhere the process maximum from getrusage)
  Δ train     that peak minus the resident set just before train(): optimizer state, activations, batches
              (one throw-away step on a copy first pays lazy imports and first-call allocations)
  CUDA peak   torch.cuda.max_memory_allocated during training, MB (only when the run is on a GPU)
--device=auto (the default) measures every arch on the CPU, and again on CUDA when a GPU is visible.
Models are freshly initialised: speed does not depend on the weights.
"""
import copy
import gc
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

DEFAULTS = {"archs": "all", "steps": 10, "warmup": 2, "threads": 1, "device": "auto", "out": ""}


def image_tokens(model) -> int | None:
    """Generation tokens per image for the built-in architectures (None for others)."""
    c = model.config
    if hasattr(c, "ae_factor"):  # Harmon, BAGEL, OpenUni: one token per latent pixel
        return (c.image_size // c.ae_factor) ** 2
    if hasattr(c, "patch_size") and hasattr(c, "vq_mult"):  # Janus: VQ grid tied to the ViT grid
        return (c.image_size // 2 ** (len(c.vq_mult) - 1)) ** 2
    if hasattr(c, "variant"):  # Show-o: 4x4-pixel VQ patches
        return (c.image_size // 4) ** 2
    return None


def _status_mb(field: str):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Current RSS in MB; on Linux also resets the peak (VmHWM) so _peak_rss() sees only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or _peak_rss()


def _peak_rss() -> float:
    """Peak RSS in MB since the last reset (Linux VmHWM), else the process maximum (getrusage)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # Linux: KiB, macOS: bytes


def worker(arch: str, cfg: dict) -> dict:
    import torch

    from reca_nb.models import registry
    from reca_nb.world import data
    from reca_nb.recipe import preset
    from reca_nb.train import train

    torch.set_num_threads(cfg["threads"])
    device = cfg["device"]
    torch.manual_seed(0)
    model = registry.build(arch)
    recipe = replace(preset(arch, "reca", model.image_size), steps=cfg["warmup"] + cfg["steps"], eval_every=0,
                     save_every=0, device=device)
    data.image_pool(recipe.n_images, recipe.data_seed, model.image_size)  # render before the baseline
    # one throw-away step on a copy pays the lazy imports (accelerate, torch._dynamo via the optimizer) and
    # first-call allocations, so they count neither as training memory nor as time
    train(copy.deepcopy(model), replace(recipe, steps=1), progress=False)
    gc.collect()
    # the clock starts when step warmup+1 draws its RecA batch (the first thing a step does) and stops when
    # train() returns; the recipe's own log_every is kept, so logging / collapse-monitor cost is as in a run
    starts, draw, cuda = [], data.Batches.reca, device == "cuda"

    def timed_draw(self, B):
        if cuda:
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        return draw(self, B)

    data.Batches.reca = timed_draw
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss0 = _reset_peak_rss()
    history = train(model, recipe, progress=False)
    if cuda:
        torch.cuda.synchronize()
    end, rss1 = time.perf_counter(), _peak_rss()
    w, n = cfg["warmup"], cfg["steps"]
    assert len(starts) == w + n, (len(starts), w + n)
    seconds = end - starts[w]
    samples = n * (recipe.batch + (recipe.i2t_batch if "i2t" in recipe.active_terms else 0))
    tok = image_tokens(model)
    return {
        "arch": arch, "device": device, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": recipe.batch, "i2t_batch": recipe.i2t_batch if "i2t" in recipe.active_terms else 0,
        "freeze": recipe.freeze, "steps": n, "seconds": seconds, "steps_per_s": n / seconds,
        "samples_per_s": samples / seconds, "image_tokens": tok,
        "tokens_per_s": n * recipe.batch * tok / seconds if tok else None,
        "peak_rss_mb": rss1, "train_rss_delta_mb": rss1 - rss0,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "last_loss": [r["loss"] for r in history if "loss" in r][-1], "threads": cfg["threads"],
    }


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def table(results: list) -> tuple:
    header = ["arch", "device", "params", "batch (RecA+I2T)", "freeze", "steps/s", "samples/s", "img tok/s",
              "peak RSS MB", "Δ train MB", "CUDA peak MB"]
    rows = [[r["arch"], r["device"], f"{r['params_m']:.2f} M", f"{r['batch']}+{r['i2t_batch']}", r["freeze"],
             f"{r['steps_per_s']:.2f}", f"{r['samples_per_s']:.1f}", _fmt(r["tokens_per_s"], ".0f"),
             f"{r['peak_rss_mb']:.0f}", f"{r['train_rss_delta_mb']:.0f}", _fmt(r["cuda_peak_mb"], ".0f")]
            for r in results]
    return header, rows


def main(argv):
    from reca_nb.models.registry import ARCHS, check
    from bench_report import options

    cfg, one = options(argv, DEFAULTS)
    if cfg["device"] not in ("cpu", "cuda", "auto"):
        raise SystemExit(f"--device must be cpu, cuda or auto, got {cfg['device']!r}")
    if one:  # inside the per-arch subprocess: one JSON line on stdout
        print("RESULT " + json.dumps(worker(one, cfg)), flush=True)
        return None
    from bench_report import machine_line, publish, run_worker

    names = list(ARCHS) if cfg["archs"] == "all" else [check(a.strip()) for a in str(cfg["archs"]).split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "HF_HUB_OFFLINE": "1"}
    passthrough = [f"--{k}={cfg[k]}" for k in ("steps", "warmup", "threads")]
    devices = [cfg["device"]]
    if cfg["device"] == "auto":
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = [(arch, dev) for dev in devices for arch in names]
    results = []
    print(f"RecA throughput: preset 'reca', {cfg['warmup']} warm-up + {cfg['steps']} timed steps, "
          f"threads={cfg['threads']}, devices={','.join(devices)}", flush=True)
    for arch, dev in jobs:
        t = time.perf_counter()
        r = run_worker(__file__, [f"--_worker={arch}", f"--device={dev}", *passthrough], env, f"{arch} ({dev})")
        if r is None:
            continue
        results.append(r)
        print(f"  {arch:<11} {dev:<4} {r['steps_per_s']:6.2f} steps/s  {r['samples_per_s']:7.1f} samples/s  "
              f"{_fmt(r['tokens_per_s'], '8.0f')} img tok/s  peak RSS {r['peak_rss_mb']:5.0f} MB "
              f"(Δ train {r['train_rss_delta_mb']:4.0f})  [{time.perf_counter() - t:.0f} s incl. start-up]",
              flush=True)
    header, rows = table(results)

    intro = (f"## RecA step throughput per architecture\n\n`python benchmarks/arch_throughput.py` "
             f"({machine_line(cfg['threads'])}): fresh model per arch, preset `reca` batch, "
             f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps of `train()`. img tok/s = RecA targets/s "
             "x generation tokens per image; peak RSS = the worker's peak resident set during training; "
             "Δ train = that peak minus the resident set just before (optimizer state, activations).")
    publish(cfg["out"], "arch_throughput", intro, header, rows, failed=len(jobs) - len(results))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
