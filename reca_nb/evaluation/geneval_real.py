"""GenEval for real images on transformers parts: score a model (or a folder of images) as GenEval does.

    python -m reca_nb.evaluation.geneval_real --model=janus-pro --adapters=runs/x --n_per_task=16
    python -m reca_nb.evaluation.geneval_real --images=DIR    # any model's images in GenEval's folder layout
    python -m reca_nb.evaluation.geneval_real --help          # every key (the fields of GenEvalConfig)

GenEval (Ghosh et al., 2023) runs mmdetection's Mask2Former (Swin-S, COCO instance segmentation) and
open_clip's ViT-L/14 on each image; mmdetection 2.x does not install next to today's torch. This port keeps
GenEval's protocol (`reca_nb.evaluation.geneval_rules`) and swaps in the same kinds of models from
transformers:

  detector  Mask2FormerForUniversalSegmentation "facebook/mask2former-swin-small-coco-instance" (Swin-S,
            COCO instance; Meta's training, not mmdetection's, so absolute numbers may shift a little);
            every instance above score 0 is read, boxes are the masks' tight boxes
  colour    CLIPModel "openai/clip-vit-large-patch14", zero-shot over GenEval's 10 colours and 3 templates, on
            the object's mask composited onto #999 grey and cropped to its box
  prompts   GenEval's own evaluation_metadata.jsonl (553 prompts, MIT), fetched once from a pinned commit into
            the reca_nb cache; `n_per_task` draws a stratified subset with a fixed seed
  score     mean of the six task accuracies, with a bootstrap interval over prompts (resampled within tasks)

Images are scored from memory exactly as from PNG files (uint8 RGB). `tiny=True` builds a random Mask2Former
and CLIP of the same classes offline: it exercises every step, its verdicts mean nothing.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from reca_nb.config import apply_overrides, check_choices, cli, describe, run_main
from reca_nb.evaluation.geneval_detect import CLIP_ID, DETECTOR_ID, Scorer, load_scorer
from reca_nb.evaluation.geneval_rules import TASKS, check_record, task_scores
from reca_nb.paths import cache_dir

METADATA_COMMIT = "d927da8e42fde2b1b5cd743da4df5ff83c1654ff"
METADATA_URL = (f"https://raw.githubusercontent.com/djghosh13/geneval/{METADATA_COMMIT}/prompts/"
                "evaluation_metadata.jsonl")
TASK_SIZES = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100,
              "color_attr": 100}  # the official file: 553 prompts
# two records per task in GenEval's format, written for reca_nb (offline runs and the notebook's tiny path)
EXAMPLE_METADATA = (
    {"tag": "single_object", "include": [{"class": "cup", "count": 1}], "prompt": "a photo of a cup"},
    {"tag": "single_object", "include": [{"class": "clock", "count": 1}], "prompt": "a photo of a clock"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "bicycle", "count": 1}],
     "prompt": "a photo of a cat and a bicycle"},
    {"tag": "two_object", "include": [{"class": "apple", "count": 1}, {"class": "vase", "count": 1}],
     "prompt": "a photo of an apple and a vase"},
    {"tag": "counting", "include": [{"class": "cup", "count": 3}], "exclude": [{"class": "cup", "count": 4}],
     "prompt": "a photo of three cups"},
    {"tag": "counting", "include": [{"class": "bird", "count": 2}],
     "exclude": [{"class": "bird", "count": 3}], "prompt": "a photo of two birds"},
    {"tag": "colors", "include": [{"class": "umbrella", "count": 1, "color": "green"}],
     "prompt": "a photo of a green umbrella"},
    {"tag": "colors", "include": [{"class": "apple", "count": 1, "color": "red"}],
     "prompt": "a photo of a red apple"},
    {"tag": "position", "include": [{"class": "bench", "count": 1},
                                    {"class": "dog", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a dog left of a bench"},
    {"tag": "position", "include": [{"class": "couch", "count": 1},
                                    {"class": "clock", "count": 1, "position": ["above", 0]}],
     "prompt": "a photo of a clock above a couch"},
    {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "blue"},
                                      {"class": "vase", "count": 1, "color": "yellow"}],
     "prompt": "a photo of a blue car and a yellow vase"},
    {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "white"},
                                      {"class": "cup", "count": 1, "color": "black"}],
     "prompt": "a photo of a white bus and a black cup"},
)


# ----------------------------------------------------------------------------- prompts

def read_metadata(path) -> list:
    """A GenEval metadata .jsonl (one record per line) -> checked records."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GenEval metadata file at {path}")
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1}: not JSON ({e.msg})") from None
        check_record(rec, f"{path}:{i + 1}")
        records.append(rec)
    return records


def official_metadata(cache=None) -> list:
    """GenEval's 553 prompts, downloaded from the pinned commit on first use and kept in the reca_nb cache."""
    name = f"evaluation_metadata-{METADATA_COMMIT[:7]}.jsonl"
    path = Path(cache) if cache else cache_dir() / "geneval" / name
    if not path.exists():
        import urllib.request

        if os.environ.get("HF_HUB_OFFLINE") == "1":  # tests and `make` targets run offline: never fetch there
            raise RuntimeError(f"offline (HF_HUB_OFFLINE=1): put GenEval's evaluation_metadata.jsonl at "
                               f"{path} or pass --metadata=FILE")

        print(f"fetching GenEval's prompts from {METADATA_URL}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(METADATA_URL, timeout=60) as r:
            text = r.read().decode("utf-8")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    records = read_metadata(path)
    sizes = {t: sum(r["tag"] == t for r in records) for t in TASKS}
    if sizes != TASK_SIZES:
        raise ValueError(f"{path} is not GenEval's metadata file (tasks {sizes}); "
                         "delete it to fetch it again")
    return records


def subset(records, n_per_task: int = 0, seed: int = 0) -> list:
    """Stratified subset: `n_per_task` records of each task drawn with `seed` (0 or more than a task has: all
    of it) -> [(index in `records`, record)] in file order."""
    rng = np.random.default_rng(seed)
    picked = []
    for task in TASKS:
        idx = [i for i, r in enumerate(records) if r["tag"] == task]
        if n_per_task and n_per_task < len(idx):
            idx = sorted(rng.choice(idx, n_per_task, replace=False).tolist())
        picked += idx
    return [(i, records[i]) for i in sorted(picked)]


# ----------------------------------------------------------------------------- images: generate, save, read

@torch.no_grad()
def generate(model, prompts: list, images_per_prompt: int = 4, seed: int = 0, progress: bool = True) -> dict:
    """{index: (n, 3, S, S) images in [0, 1]} for [(index, record)]: one `model.sample` call per prompt with
    a generator seeded by (seed, index), so two models (base and RecA) meet the same prompts and seeds."""
    from tqdm.auto import tqdm

    model.eval()
    out = {}
    for index, rec in tqdm(prompts, desc="generating", disable=not progress):
        gen = torch.Generator(device=model.device).manual_seed(seed * 100_003 + index)
        out[index] = model.sample([rec["prompt"]] * images_per_prompt, generator=gen).float().cpu()
    return out


def _pil(image):
    """(3, H, W) in [0, 1] -> a PIL image of its uint8 pixels, as a PNG file would hold them."""
    from PIL import Image

    return Image.fromarray((image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy())


def write_folder(folder, prompts: list, images: dict) -> Path:
    """GenEval's layout: folder/<index:05d>/metadata.jsonl (the record) and samples/<k:04d>.png."""
    folder = Path(folder)
    for index, rec in prompts:
        samples = folder / f"{index:05d}" / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        (samples.parent / "metadata.jsonl").write_text(json.dumps(rec))
        for k, img in enumerate(images[index]):
            _pil(img).save(samples / f"{k:04d}.png")
    return folder


def read_folder(folder) -> list:
    """[(index, record, [png paths])] of a folder in GenEval's layout (other files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        meta = sub / "metadata.jsonl"
        if not meta.exists():
            raise ValueError(f"{sub} has no metadata.jsonl "
                             "(GenEval's layout: NNNNN/metadata.jsonl, samples/*.png)")
        rec = json.loads(meta.read_text(encoding="utf-8"))
        check_record(rec, str(meta))
        pngs = sorted(p for p in (sub / "samples").glob("*.png") if p.stem.isdigit())
        items.append((int(sub.name), rec, pngs))
    if not any(pngs for *_, pngs in items):
        raise ValueError(f"{folder} holds no GenEval images "
                         "(expected NNNNN/samples/NNNN.png with metadata.jsonl)")
    return items


def score(scorer: Scorer, items, progress: bool = True) -> list:
    """One result row per image. items: [(index, record, images)] with images a (n, 3, H, W) tensor in [0, 1],
    PIL images or paths."""
    from PIL import Image, ImageOps
    from tqdm.auto import tqdm

    rows = []
    for index, rec, images in tqdm(list(items), desc="scoring", disable=not progress):
        for k, img in enumerate(images):
            if torch.is_tensor(img):
                img = _pil(img)
            elif not hasattr(img, "convert"):
                img = ImageOps.exif_transpose(Image.open(img))
            rows.append({"index": index, "image": k, "tag": rec["tag"], "prompt": rec["prompt"],
                         **scorer.judge(img, rec)})
    return rows


# ----------------------------------------------------------------------------- numbers with intervals

def _per_prompt(rows) -> dict:
    """{task: (correct counts, image counts)} per prompt, prompts sorted by index (the bootstrap's units)."""
    out = {}
    for task in TASKS:
        idx = sorted({r["index"] for r in rows if r["tag"] == task})
        if idx:
            c = np.array([sum(r["correct"] for r in rows if r["index"] == i) for i in idx], float)
            n = np.array([sum(1 for r in rows if r["index"] == i) for i in idx], float)
            out[task] = (idx, c, n)
    return out


def _boot_overall(per: dict, draws: dict) -> np.ndarray:
    return np.mean([per[t][1][d].sum(1) / per[t][2][d].sum(1) for t, d in draws.items()], axis=0)


def _draws(per: dict, n_boot: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {t: rng.integers(0, len(idx), (n_boot, len(idx))) for t, (idx, _, _) in per.items()}


def summarize(rows, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Task accuracies and the overall score (their mean) with a percentile bootstrap interval over prompts,
    resampled within each task."""
    scores = task_scores(rows)
    per = _per_prompt(rows)
    boot = _boot_overall(per, _draws(per, n_boot, seed))
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"scores": scores, "interval": [float(lo), float(hi)], "level": level, "n_boot": n_boot,
            "n_prompts": {t: len(v[0]) for t, v in per.items()}, "n_images": len(rows)}


def compare(before, after, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """after - before on the same prompts: per-task and overall differences, and a paired bootstrap interval
    of the overall difference (the same resampled prompts for both runs)."""
    pb, pa = _per_prompt(before), _per_prompt(after)
    if {t: v[0] for t, v in pb.items()} != {t: v[0] for t, v in pa.items()}:
        raise ValueError("compare needs both runs scored on the same prompts")
    draws = _draws(pb, n_boot, seed)
    diff = _boot_overall(pa, draws) - _boot_overall(pb, draws)
    lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
    sb, sa = task_scores(before), task_scores(after)
    return {"delta": {k: sa[k] - sb[k] for k in sb}, "interval": [float(lo), float(hi)], "level": level,
            "before": summarize(before, n_boot, seed, level), "after": summarize(after, n_boot, seed, level)}


def markdown(runs: dict) -> str:
    """A markdown table: one column per run ({name: summarize(...)}), a row per task and the overall."""
    names = list(runs)
    tasks = [t for t in TASKS if any(t in r["scores"] for r in runs.values())]
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for t in tasks:
        cells = " | ".join(f"{r['scores'].get(t, float('nan')):.3f}" for r in runs.values())
        lines.append(f"| {t} | {cells} |")
    lines.append("| **overall** | " + " | ".join(
        f"**{r['scores']['overall']:.3f}** [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]"
        for r in runs.values()) + " |")
    lines.append("| images | " + " | ".join(str(r["n_images"]) for r in runs.values()) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line

@dataclass
class GenEvalConfig:
    model: Literal["janus-pro", "openuni-real"] = "janus-pro"  # the model that generates (unless --images)
    images: str = ""  # a folder in GenEval's layout: score these images, generate nothing
    adapters: str = ""  # adapters put on the base: a file, or the run folder holding adapters.safetensors
    model_id: str = ""  # janus-pro: hub id, "1b", "7b" or a local folder ("" = Janus-Pro-1B)
    tiny: bool = False  # tiny random generator and scorer, offline: exercises the path, scores mean nothing
    metadata: str = ""  # a GenEval metadata .jsonl; "" = GenEval's own (fetched once), tiny: EXAMPLE_METADATA
    n_per_task: int = 16  # stratified subset: prompts per task (0 = all 553)
    images_per_prompt: int = 4  # GenEval's standard is 4
    seed: int = 0  # subset draw and sampling seeds
    n_boot: int = 1000  # bootstrap resamples for the interval
    out: str = ""  # where geneval.json, geneval.md and images/ go ("" = <cache>/geneval/<model>-<seed>)
    device: str = ""  # "" = cuda when available
    threads: int = 0  # torch CPU threads (0 = torch's default)
    progress: bool = True  # tqdm bars while generating and scoring

    def __post_init__(self):
        check_choices(self)
        if self.n_per_task < 0 or self.images_per_prompt < 1:
            raise ValueError("n_per_task must be >= 0 and images_per_prompt >= 1")


def load_generator(cfg: GenEvalConfig):
    """The model named by cfg, with its adapters (if any) merged in."""
    from reca_nb.models import registry

    kw = {"model_id": cfg.model_id} if cfg.model_id else {}  # a hub id or folder (the models that take one)
    model = registry.load_real(cfg.model, tiny=cfg.tiny, device=cfg.device or None, **kw)
    if cfg.adapters:
        from reca_nb.adapters import load_adapters

        path = Path(cfg.adapters)
        model = load_adapters(model, path / "adapters.safetensors" if path.is_dir() else path)
    return model


def run(cfg: GenEvalConfig) -> dict:
    """Generate (or read) the images, score them, write geneval.json + geneval.md; returns the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else cache_dir() / "geneval" / f"{cfg.model}-{cfg.seed}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if cfg.images:
        items = read_folder(cfg.images)
        name = Path(cfg.images).name
    else:
        if cfg.metadata:
            records = read_metadata(cfg.metadata)
        else:
            records = list(EXAMPLE_METADATA) if cfg.tiny else official_metadata()
        prompts = subset(records, cfg.n_per_task, cfg.seed)
        model = load_generator(cfg)
        images = generate(model, prompts, cfg.images_per_prompt, cfg.seed, cfg.progress)
        write_folder(out / "images", prompts, images)
        items = [(i, rec, images[i]) for i, rec in prompts]
        name = cfg.model + (" + adapters" if cfg.adapters else "")
        del model
    t_gen = time.time() - t0
    rows = score(load_scorer(tiny=cfg.tiny, device=cfg.device or None), items, cfg.progress)
    summary = {**summarize(rows, cfg.n_boot, cfg.seed), "name": name, "config": asdict(cfg),
               "seconds": {"generate": round(t_gen, 1), "score": round(time.time() - t0 - t_gen, 1)},
               "tiny": cfg.tiny, "out": str(out), "results": rows}
    (out / "geneval.json").write_text(json.dumps(summary, indent=1))
    note = "\n*tiny random models: the numbers mean nothing.*\n" if cfg.tiny else ""
    (out / "geneval.md").write_text(f"GenEval ({DETECTOR_ID} + {CLIP_ID}), {summary['level']:.0%} bootstrap "
                                    f"interval over prompts\n\n" + markdown({name: summary}) + note)
    return summary


USAGE = """usage: python -m reca_nb.evaluation.geneval_real [--model=janus-pro|openuni-real]
           [--adapters=RUN_DIR|FILE] [--model_id=ID] [--n_per_task=16] [--images_per_prompt=4] [--seed=0]
           [--metadata=FILE.jsonl] [--out=DIR]
       python -m reca_nb.evaluation.geneval_real --images=DIR [--out=DIR]   (a folder in GenEval's layout)
  GenEval's protocol on transformers (Mask2Former Swin-S COCO + CLIP ViT-L/14); --tiny: offline random
  models."""


def main(argv=None):
    _, overrides = cli(argv, f"{USAGE}\n  the keys, with their defaults:\n{describe(GenEvalConfig())}")
    summary = run(apply_overrides(GenEvalConfig(), overrides))
    print(markdown({summary["name"]: summary}), end="")
    print(f"written: {Path(summary['out']) / 'geneval.json'}, {Path(summary['out']) / 'geneval.md'}")
    return summary


if __name__ == "__main__":
    run_main(main)
