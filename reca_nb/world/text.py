"""Word-level text tokenizer over the shape-world vocabulary and the RecA prompt templates.

The vocabulary is fixed and built from code and shipped text only (shape-world words plus the words of
data/prompts/reca_templates.txt), so every miniature and checkpoint agrees on token ids.
Unknown words raise a clear error instead of silently mapping to <unk>.
"""
from __future__ import annotations

import re
from functools import lru_cache

import torch

from reca_nb.world import shapes

SPECIALS = ("<pad>", "<bos>", "<eos>", "<t2i>", "<i2t>", "<soi>", "<eoi>", "<sou>", "<eou>", "<mask>")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks: "Describe it, please!" -> describe it , please !"""
    return _WORD.findall(text.lower())


def shape_world_words() -> set[str]:
    words = set()
    for phrase in (*shapes.SHAPES, *shapes.PLURAL.values(), *shapes.COLORS, *shapes.SLOTS,
                   *shapes.NUMBERS.values(), *shapes.RELATIONS, "a and"):
        words.update(split_words(phrase))
    return words


class WordTokenizer:
    def __init__(self, words):
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def __len__(self):
        return len(self.itos)

    def __contains__(self, word):
        return word in self.stoi

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = []
        for w in split_words(text):
            if w not in self.stoi:
                raise ValueError(
                    f"unknown word {w!r} in {text!r}: the shape-world tokenizer knows {len(self)} words "
                    f"(shapes {shapes.SHAPES}, colours {shapes.COLOR_NAMES}, positions, numbers, template words)")
            ids.append(self.stoi[w])
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids, skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and skip_special:
                break
            w = self.itos[i]
            if skip_special and w in SPECIALS:
                continue
            out.append(w)
        return " ".join(out)

    def batch(self, texts, length: int | None = None, bos: bool = False, eos: bool = False) -> torch.Tensor:
        """Right-padded LongTensor (B, L); L = longest unless `length` is given (then longer texts raise)."""
        seqs = [self.encode(t, bos, eos) for t in texts]
        L = length or max(1, max(len(s) for s in seqs))
        for t, s in zip(texts, seqs):
            if len(s) > L:
                raise ValueError(f"{t!r} is {len(s)} tokens, longer than the {L} allowed")
        return torch.tensor([s + [self.pad_id] * (L - len(s)) for s in seqs], dtype=torch.long)


@lru_cache(maxsize=1)
def tokenizer() -> WordTokenizer:
    """The one shared tokenizer: shape-world words + every word of the shipped RecA templates."""
    from reca_nb.world.prompts import load_templates  # local: keep text importable on its own

    words = shape_world_words()
    for t in load_templates():
        words.update(split_words(t))
    return WordTokenizer(words)
