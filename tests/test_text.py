"""The shared word tokenizer: round trips, padding, clear errors on unknown words."""
import pytest

from reca_nb.world import shapes
from reca_nb.world.text import SPECIALS, split_words, tokenizer


def test_every_shape_world_text_round_trips():
    tok = tokenizer()
    ds = shapes.ShapeWorld(60, seed=5)
    for i in range(60):
        for text in (ds[i]["prompt"], ds[i]["description"]):
            assert tok.decode(tok.encode(text, bos=True, eos=True)) == text


def test_specials_come_first_with_fixed_ids():
    tok = tokenizer()
    assert tok.itos[: len(SPECIALS)] == list(SPECIALS)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)


def test_batch_pads_right_and_rejects_overlong():
    tok = tokenizer()
    ids = tok.batch(["a red circle", "a square"], length=5)
    assert ids.shape == (2, 5) and ids[1, 2:].tolist() == [tok.pad_id] * 3
    with pytest.raises(ValueError, match="longer than"):
        tok.batch(["a red circle and a blue square"], length=3)


def test_unknown_word_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown word 'dragon'"):
        tokenizer().encode("a red dragon")


def test_split_words_lowercases_and_splits_punctuation():
    assert split_words("Describe it, please!") == ["describe", "it", ",", "please", "!"]
