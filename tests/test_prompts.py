"""The RecA prompt templates (practice 2) and the word tokenizer built on them."""
import random
import re

import pytest

from reca_nb.world import prompts
from reca_nb.world import shapes
from reca_nb.world.text import split_words, tokenizer


def test_file_has_at_least_360_unique_templates():
    lines = [l.strip() for l in prompts.TEMPLATE_FILE.read_text().splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    assert len(lines) == len(set(lines)), "duplicate template lines in the file"
    templates = prompts.load_templates("diverse")
    assert len(templates) >= 360
    assert len({t.lower() for t in templates}) == len(templates), "templates differ only by case"


def test_templates_span_registers():
    templates = prompts.load_templates("diverse")
    n_words = [len(t.split()) for t in templates]
    assert min(n_words) >= 4 and max(n_words) <= 40
    assert sum(n <= 6 for n in n_words) >= 30, "need short casual asks"
    assert sum(n >= 25 for n in n_words) >= 10, "need long audit-style instructions"
    assert sum(t.rstrip().endswith("?") for t in templates) >= 30, "need questions"
    assert sum(bool(re.match(r"^[A-Z][a-z ]+: ", t)) for t in templates) >= 30, "need 'Label: a, b' lists"
    polite = ("could you", "can you", "would you", "i'd", "i would", "please", "kindly")
    assert sum(t.lower().startswith(polite) for t in templates) >= 40, "need polite requests"


def test_templates_are_requests_not_captions():
    # a template must not describe a particular scene (the condition carries the content, not the text)
    for t in prompts.load_templates("diverse"):
        words = set(split_words(t))
        assert not words & set(shapes.COLOR_NAMES), t
        assert not words & {"circle", "square", "triangle", "circles", "squares", "triangles"}, t


def test_single_mode_returns_one_prompt():
    assert prompts.load_templates("single") == (prompts.SINGLE_PROMPT,)
    assert set(prompts.sample_templates(20, "single", random.Random(0))) == {prompts.SINGLE_PROMPT}
    with pytest.raises(ValueError, match="diverse"):
        prompts.load_templates("many")


def test_every_template_tokenizes_and_roundtrips():
    tok = tokenizer()
    for t in prompts.load_templates("diverse"):
        ids = tok.encode(t)
        assert len(ids) >= 4
        assert tok.decode(ids) == " ".join(split_words(t))


def test_vocabulary_stays_modest():
    words = set()
    for t in prompts.load_templates("diverse"):
        words.update(split_words(t))
    assert len(words) < 600, f"templates use {len(words)} distinct words; the mini models embed each one"
    assert len(tokenizer()) >= len(words)


def test_unknown_word_raises_clear_error():
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        tokenizer().encode("Describe the zebra.")


def test_sampling_is_reproducible_and_diverse():
    a = prompts.sample_templates(64, "diverse", random.Random(123))
    b = prompts.sample_templates(64, "diverse", random.Random(123))
    c = prompts.sample_templates(64, "diverse", random.Random(124))
    assert a == b and a != c
    assert len(set(a)) > 40  # 64 uniform draws from >= 360 templates are mostly distinct


def test_template_subset_is_fixed_and_default_unchanged():
    full = prompts.load_templates("diverse")
    assert prompts.load_templates("diverse", n=None) == full  # the default keeps every template
    sub = prompts.load_templates("diverse", n=20)
    assert len(sub) == len(set(sub)) == 20 and set(sub) <= set(full)
    assert list(sub) == [t for t in full if t in set(sub)]  # file order
    assert prompts.load_templates("diverse", n=20) == sub  # same seed, same subset
    assert prompts.load_templates("diverse", n=20, seed=1) != sub
    assert prompts.load_templates("diverse", n=len(full)) == full
    assert prompts.load_templates("single", n=1) == (prompts.SINGLE_PROMPT,)
    for bad in (0, len(full) + 1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            prompts.load_templates("diverse", n=bad)
    with pytest.raises(ValueError, match="n must be"):
        prompts.load_templates("single", n=2)
