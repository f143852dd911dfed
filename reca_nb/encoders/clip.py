"""ShapeCLIP: the frozen *semantic* understanding encoder shared by the CLIP-style miniatures.

RecA conditions generation on a semantic understanding embedding, not on pixels or VQ codes (paper Sec. 3:
SigLIP / CLIP / VLM features). Show-o's CLIP variant feeds the penultimate-layer patch tokens of a frozen
CLIP ViT through an MLP projector, exactly like LLaVA; BAGEL and OpenUni use their own frozen ViTs.
No real CLIP weights can be downloaded here, so this is a real transformers `CLIPModel`, tiny, trained
contrastively on shape-world (image, caption) pairs by `python -m reca_nb.build.fit_clip` and shipped in
data/encoders/. Its text side reads the shared word tokenizer's ids; the vocabulary is saved with the weights,
so words added to the tokenizer later (new templates) cannot shift the ids this encoder was trained on.

    clip = load_clip()                   # cached, frozen, eval
    clip.image_tokens(x)                 # (B, 3, h, h), h in 12..32, multiple of 4 -> (B, (h/4)**2, D)
    clip.image_embeds(x), clip.text_embeds(texts)   # pooled, L2-normalised, for retrieval / scoring

ShapeCLIP is deliberately *not* an nn.Module: a model that stores it as an attribute does not take its
weights into its own state_dict, parameters() or optimizer, and `model.train()` cannot unfreeze it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from reca_nb.paths import DATA_DIR
from reca_nb.world.shapes import COLOR_NAMES, SHAPES
from reca_nb.world.text import SPECIALS, WordTokenizer

CLIP_FILE = DATA_DIR / "encoders" / "clip.safetensors"
CLIP_CONFIG_FILE = DATA_DIR / "encoders" / "clip.json"
MIN_SIZE, MAX_SIZE = 12, 32  # understanding resolutions the encoder was trained on (multiples of the patch)


def build_clip_model(words, hidden: int = 64, vision_layers: int = 4, text_layers: int = 2, heads: int = 4,
                     patch: int = 4, image_size: int = 32, max_text_len: int = 32) -> CLIPModel:
    """A random-init tiny CLIPModel over the vocabulary `words` (the shared tokenizer's itos).

    Text pooling: transformers' CLIPTextTransformer pools the hidden state at the first `eos_token_id`, but
    treats eos_token_id == 2 as a legacy config and pools at argmax(input_ids) instead. Our shared <eos> is 2,
    so the CLIP text side gets its own end-of-text id one past the shared vocabulary (as OpenAI CLIP's EOT is
    its last id): both pooling rules then pick the same, correct position.
    """
    eot = len(words)
    text = dict(vocab_size=eot + 1, hidden_size=hidden, intermediate_size=4 * hidden,
                num_hidden_layers=text_layers, num_attention_heads=heads,
                max_position_embeddings=max_text_len, pad_token_id=0, bos_token_id=1, eos_token_id=eot)
    vision = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=vision_layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased bilinear resize of (B, 3, H, W) to size x size (how fit_clip made its training inputs)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ShapeCLIP:
    """A frozen CLIPModel plus its vocabulary; see the module docstring."""

    def __init__(self, model: CLIPModel, words):
        self.model = model.eval().requires_grad_(False)
        self.words = list(words)
        if tuple(self.words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError("CLIP vocabulary must start with the shared special tokens " + str(SPECIALS))
        self.tokenizer = WordTokenizer(self.words[len(SPECIALS):])  # same ids as at training time
        if self.tokenizer.itos != self.words:
            raise ValueError("CLIP vocabulary is not in WordTokenizer order (specials, then sorted words)")
        self.eot_id = model.config.text_config.eos_token_id
        vc = model.config.vision_config
        self.patch, self.image_size, self.width = vc.patch_size, vc.image_size, vc.hidden_size

    # --- persistence ----------------------------------------------------------------------------------
    def save(self, path=CLIP_FILE, extra: dict | None = None):
        """Weights to `path` (safetensors), config + vocabulary (+ `extra`, e.g. metrics) to path.json."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(state, str(path))
        meta = {"clip_config": self.model.config.to_diff_dict(), "words": self.words, **(extra or {})}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def from_file(cls, path=CLIP_FILE) -> "ShapeCLIP":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no CLIP weights at {path}; regenerate: `python -m reca_nb.build.fit_clip`")
        meta = json.loads(path.with_suffix(".json").read_text())
        model = CLIPModel(CLIPConfig.from_dict(meta["clip_config"]))
        model.load_state_dict(load_file(str(path)))
        return cls(model, meta["words"])

    def to(self, device):
        self.model.to(device)
        return self

    @property
    def device(self):
        return self.model.logit_scale.device

    # --- images ---------------------------------------------------------------------------------------
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected an RGB image batch (B, 3, H, W) in [0, 1], got {shape}")
        h, w = images.shape[-2:]
        if h != w or h % self.patch or not MIN_SIZE <= h <= MAX_SIZE:
            raise ValueError(f"ShapeCLIP takes square images of {MIN_SIZE}..{MAX_SIZE} px, a multiple of "
                             f"{self.patch}; got {h}x{w} (resize first, e.g. reca_nb.encoders.clip.resize(x, 16))")
        return (images.to(self.device, torch.float32) - 0.5) / 0.5  # [0, 1] -> [-1, 1]

    @torch.no_grad()
    def image_tokens(self, images: torch.Tensor, layer: int = -2) -> torch.Tensor:
        """(B, 3, h, h) in [0, 1] -> (B, (h/patch)**2, D) patch features, CLS dropped, from hidden layer
        `layer` (default -2, the penultimate layer, as LLaVA / Show-o take them). Row-major patch order.
        Raw residual-stream values (std ~1.7, |x| up to ~10): put a LayerNorm or MLP projector after them."""
        out = self.model.vision_model(self._pixels(images), interpolate_pos_encoding=True,
                                      output_hidden_states=True)
        return out.hidden_states[layer][:, 1:].to(images.device)  # (B, N, D), on the input's device

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, h) -> (B, P) pooled, projected, L2-normalised image embeddings."""
        emb = self.model.get_image_features(pixel_values=self._pixels(images), interpolate_pos_encoding=True)
        emb = emb.pooler_output if not torch.is_tensor(emb) else emb
        return F.normalize(emb, dim=-1).to(images.device)

    # --- text -----------------------------------------------------------------------------------------
    def tokenize(self, texts) -> tuple:
        """list[str] -> (input_ids, attention_mask), each (B, L): <bos> words <eot> <pad>..."""
        if isinstance(texts, str):
            raise ValueError("pass a list of strings, not one string")
        seqs = [[self.tokenizer.bos_id] + self.tokenizer.encode(t) + [self.eot_id] for t in texts]
        L = max(len(s) for s in seqs)
        limit = self.model.config.text_config.max_position_embeddings
        if L > limit:
            raise ValueError(f"a text is {L} tokens long; the CLIP text encoder takes at most {limit}")
        ids = torch.tensor([s + [self.tokenizer.pad_id] * (L - len(s)) for s in seqs], device=self.device)
        return ids, (ids != self.tokenizer.pad_id).long()

    @torch.no_grad()
    def text_embeds(self, texts) -> torch.Tensor:
        """list[str] -> (B, P) pooled, projected, L2-normalised text embeddings."""
        ids, mask = self.tokenize(texts)
        emb = self.model.get_text_features(input_ids=ids, attention_mask=mask)
        emb = emb.pooler_output if not torch.is_tensor(emb) else emb
        return F.normalize(emb, dim=-1)

    # --- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def retrieval_accuracy(self, images: torch.Tensor, texts, candidates: int = 64) -> float:
        """Image -> text top-1 accuracy: each image picks the best of the texts in its group of `candidates`
        consecutive (image, text) pairs; correct when the picked text equals its own (duplicates count)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        hits = 0
        for s in range(0, len(texts), candidates):
            group = list(texts[s:s + candidates])
            sim = self.image_embeds(images[s:s + candidates]) @ self.text_embeds(group).T  # (b, b)
            hits += sum(group[j] == group[i] for i, j in enumerate(sim.argmax(1).tolist()))
        return hits / len(texts)


@lru_cache(maxsize=1)
def load_clip() -> ShapeCLIP:
    """The shipped encoder (data/encoders/clip.safetensors), frozen and in eval mode. Cached: one shared
    instance; treat it as read-only."""
    return ShapeCLIP.from_file(CLIP_FILE)


# ----------------------------------------------------------------------------- "is it semantic?" probe

def slot_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) row-major patch tokens -> (B, 4, D): mean token over each 2x2-grid cell (slot order of
    shapes.SLOTS); for an odd patch grid the middle row/column counts towards both halves."""
    B, N, D = tokens.shape
    g = int(round(N ** 0.5))
    if g * g != N:
        raise ValueError(f"{N} tokens do not form a square grid")
    x = tokens.transpose(1, 2).reshape(B, D, g, g)
    return F.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # (B, 4, D)


def slot_labels(scenes) -> torch.Tensor:
    """(B, 4) class per slot: 0 = empty, else 1 + colour_index * 3 + shape_index (19 classes)."""
    y = torch.zeros(len(scenes), 4, dtype=torch.long)
    for i, sc in enumerate(scenes):
        for o in getattr(sc, "objects", sc):
            y[i, o.slot] = 1 + COLOR_NAMES.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)
    return y


N_SLOT_CLASSES = 1 + len(COLOR_NAMES) * len(SHAPES)


def linear_probe(train_x, train_y, test_x, test_y, n_classes: int, l2: float = 1e-3,
                 steps: int = 200) -> float:
    """Multinomial logistic regression (standardised features, L-BFGS) fit on train; test accuracy."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mu) / sd, (test_x - mu) / sd
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(xtr.shape[1], n_classes)
    torch.nn.init.normal_(lin.weight, std=0.01, generator=g)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), train_y) + l2 * lin.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (lin(xte).argmax(1) == test_y).float().mean().item()
