"""Your own images for RecA: an unlabelled image folder (plus optional captions for I2T mixing).

RecA needs nothing but images (arXiv 2509.07295, Sec. 3: the caption is never read; the text is a random
template), so the real-model path trains on any folder of pictures:

    folder = ImageFolder("my_photos")                      # recursive; jpg/png/webp/bmp/gif/tif
    history = train(model, recipe, data=folder.batches)    # reca_nb.train: one loop for every UMM

    python -m reca_nb.train --arch=janus-pro --image_folder=my_photos --captions=captions.csv ...

* Files that cannot be decoded (corrupt, truncated, not an image) or that are too small are skipped and
  counted (`folder.skipped`, a one-line report), never a crash. Grayscale, palette, 16-bit and RGBA images
  become RGB (alpha composited on black, as in `reca_nb.world.images.as_image_batch`); EXIF rotation is applied.
* Targets are centre-cropped squares at the model's generation resolution (`size`), held in memory as uint8
  (N x 3 x size^2 bytes: 1000 images at 384 px = 0.44 GB). The understanding input is made from the same
  image by the recipe's bottleneck transform (`Recipe.und_transform`) inside the training loop.
* Captions (practice 4, I2T mixing for shared-parameter models such as Janus-Pro), optional: a sidecar
  `name.txt` next to `name.jpg`, or one CSV (columns file/image/path + caption/text) or JSONL file
  ({"file": ..., "caption": ...}) with paths relative to the folder. Images without a caption still serve
  RecA; I2T draws only from the captioned ones.

`FolderBatches` is the training loop's sampler, with the same methods as `reca_nb.world.data.Batches`
(reca, i2t, t2i, state, set_state): one torch.Generator, so resumed runs draw the same batches.
"""
from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from reca_nb.world.images import as_image_batch
from reca_nb.world.prompts import load_templates

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MIN_SIDE = 8  # images whose shorter side is below this many pixels are skipped ("too small")
PATH_KEYS = ("file", "image", "path", "file_name", "filename")
TEXT_KEYS = ("caption", "text", "prompt")


class ImageFolder:
    """The image files under `root` (recursive, sorted) and their optional captions.

    root:       a folder of images (sub-folders included); hidden files and folders are ignored
    captions:   None (sidecar .txt files, if any) | a .csv / .jsonl file mapping image paths to captions
    max_images: keep only the first N files (sorted order), e.g. to bound memory
    min_side:   skip images whose shorter side is smaller (default 8 px)
    """

    def __init__(self, root, captions=None, max_images: int | None = None, extensions=EXTENSIONS,
                 min_side: int = MIN_SIDE):
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is a file, not a folder of images")
        exts = tuple(e.lower() for e in extensions)
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in exts and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise ValueError(f"no image files ({', '.join(exts)}) under {self.root} (searched recursively)")
        self.files = files[:max_images] if max_images else files
        self.min_side = min_side
        self.captions = _read_captions(self.root, self.files, captions)
        self.skipped: dict = {}  # file -> reason, filled when pixels are loaded
        self._pools: dict = {}

    def __len__(self):
        return len(self.files)

    def __repr__(self):
        return (f"ImageFolder({str(self.root)!r}: {len(self.files)} files, {len(self.captions)} captioned"
                + (f", {len(self.skipped)} skipped" if self.skipped else "") + ")")

    # --- pixels ------------------------------------------------------------------------------------
    def pool(self, size: int, progress: bool = True, warn: bool = True):
        """(images uint8 (N, 3, size, size), captions list[str | None]) of every readable image; built once
        per size. Unreadable / too small files are skipped, counted in `self.skipped` and, with `warn`,
        reported in a UserWarning (callers that print `report()` instead pass warn=False)."""
        if size in self._pools:
            return self._pools[size]
        from tqdm.auto import tqdm

        images, texts, skipped = [], [], {}
        for path in tqdm(self.files, desc=f"reading {self.root.name}/ at {size}px", disable=not progress,
                         leave=False):
            try:
                img = load_image(path, size, self.min_side)
            except BadImage as e:
                skipped[path] = str(e)
                continue
            images.append((img[0] * 255).round().to(torch.uint8))
            texts.append(self.captions.get(path))
        self.skipped.update(skipped)
        if skipped and warn:
            reasons = Counter(r.split(":")[0] for r in skipped.values())
            first = ", ".join(p.name for p in list(skipped)[:3])
            warnings.warn(f"{self.root}: skipped {len(skipped)} of {len(self.files)} files "
                          f"({', '.join(f'{n} {r}' for r, n in reasons.most_common())}; e.g. {first})", stacklevel=2)
        if not images:
            raise ValueError(f"none of the {len(self.files)} files under {self.root} could be read as an "
                             f"image of at least {self.min_side}x{self.min_side} px")
        self._pools[size] = (torch.stack(images), texts)
        return self._pools[size]

    def report(self) -> str:
        """One line: images read of the files found, captions, skipped files by reason (after `pool`)."""
        found = f"{len(self.files)} image files, {len(self.captions)} with captions"
        if not self._pools:
            return f"{self.root}: {found} (not read yet)"
        reasons = Counter(r.split(":")[0] for r in self.skipped.values())
        skipped = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"
        return f"{self.root}: read {len(self.files) - len(self.skipped)} of {found}, skipped: {skipped}"

    def batches(self, size: int, seed: int = 0, prompts: str = "diverse", device="cpu") -> "FolderBatches":
        """The training loop's sampler at the model's generation resolution: `train(..., data=folder.batches)`."""
        return FolderBatches(self, size, seed=seed, prompts=prompts, device=device)


class BadImage(ValueError):
    """A file that cannot serve as a training image; the message starts with the reason."""


def load_image(path, size: int, min_side: int = MIN_SIDE) -> torch.Tensor:
    """One file -> (1, 3, size, size) float in [0, 1]: EXIF-rotated, centre-cropped square, resized.
    Raises BadImage('unreadable: ...' | 'too small: ...') instead of any decoder error."""
    try:
        with Image.open(path) as img:
            img.load()  # decodes everything now: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            if img.mode == "P":  # palette: keep its transparency for compositing
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode == "1":
                img = img.convert("L")
            w, h = img.size
            if min(w, h) < min_side:
                raise BadImage(f"too small: {w}x{h} px < {min_side}")
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if s >= 4 * size and img.mode in ("L", "LA", "RGB", "RGBA"):
                img = img.reduce(s // (2 * size))  # cheap box pre-shrink of big photos; exact area resize below
            return as_image_batch(img, size=size)
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"unreadable: {type(e).__name__}: {e}") from e


def _read_captions(root: Path, files: list, source) -> dict:
    """{image path: caption} from sidecar .txt files (source=None) or a CSV / JSONL file."""
    if source is None:
        out = {}
        for f in files:
            side = f.with_suffix(".txt")
            if side.exists():
                text = side.read_text(encoding="utf-8", errors="replace").strip()
                if text:
                    out[f] = text
        return out
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"captions file {source} does not exist")
    rows = []
    if source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif source.suffix.lower() in (".jsonl", ".json"):
        for i, line in enumerate(source.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source}:{i + 1} is not a JSON object ({e})") from e
    else:
        raise ValueError(f"captions file must be .csv or .jsonl, got {source.name}")
    known = {f.resolve(): f for f in files}
    out, unknown = {}, 0
    for i, row in enumerate(rows):
        key = next((k for k in PATH_KEYS if isinstance(row, dict) and row.get(k)), None)
        text_key = next((k for k in TEXT_KEYS if isinstance(row, dict) and row.get(k) is not None), None)
        if key is None or text_key is None:
            raise ValueError(f"{source} row {i + 1}: need an image column ({'/'.join(PATH_KEYS)}) and a "
                             f"caption column ({'/'.join(TEXT_KEYS)}), got {row!r}")
        path = Path(row[key])
        path = (path if path.is_absolute() else root / path).resolve()
        if path in known and str(row[text_key]).strip():
            out[known[path]] = str(row[text_key]).strip()
        else:
            unknown += 1
    if unknown:
        warnings.warn(f"{source}: {unknown} of {len(rows)} caption rows name no image in {root} "
                      "(or have an empty caption); ignored", stacklevel=3)
    return out


class FolderBatches:
    """Batches from an ImageFolder with the interface of `reca_nb.world.data.Batches`."""

    def __init__(self, folder: ImageFolder, size: int, seed: int = 0, prompts: str = "diverse", device="cpu"):
        self.folder, self.size = folder, size
        self.images, texts = folder.pool(size)
        self.captioned = [i for i, t in enumerate(texts) if t]
        self.texts = texts
        self.templates = load_templates(prompts)
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)

    def _take(self, idx: list):
        images = self.images[idx].to(self.device, non_blocking=True).float() / 255  # (B, 3, S, S)
        return images, [self.texts[i] for i in idx]

    def reca(self, B: int):
        """(target images, templates): any image; the text is a random template, never its caption."""
        idx = torch.randint(len(self.images), (B,), generator=self.gen).tolist()
        t = torch.randint(len(self.templates), (B,), generator=self.gen).tolist()
        return self._take(idx)[0], [self.templates[i] for i in t]

    def _captioned(self, B: int, what: str):
        if not self.captioned:
            raise ValueError(f"{what} needs captions, but no image in {self.folder.root} has one: add sidecar "
                             ".txt files or pass captions=<csv/jsonl>, or set lambda_i2t=0 (and lambda_t2i=0)")
        pick = torch.randint(len(self.captioned), (B,), generator=self.gen).tolist()
        return self._take([self.captioned[i] for i in pick])

    def i2t(self, B: int):
        """(images, captions) from the captioned images."""
        return self._captioned(B, "I2T mixing (lambda_i2t > 0)")

    def t2i(self, B: int):
        """(images, captions as prompts) from the captioned images."""
        return self._captioned(B, "the T2I term (lambda_t2i > 0)")

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor):
        self.gen.set_state(state)
