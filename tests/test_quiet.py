"""Clean output: training, sampling and captioning call transformers through its current API, so no
FutureWarning / UserWarning and no logged transformers warning reaches a notebook cell or the CLI (e.g. the
`past_key_values=` keyword, deprecated in transformers 5.24, in the KV-cache loops of Show-o and Janus)."""
import logging
import warnings
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from reca_nb.models import registry
from reca_nb.models.real import janus_pro
from reca_nb.recipe import preset
from reca_nb.train import train


pytestmark = pytest.mark.usefixtures("own_home_one_thread")


@contextmanager
def quiet():
    """Fail on any FutureWarning / UserWarning, or transformers log record at WARNING or above, inside."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # a message logged once earlier in the session would stay muted
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", UserWarning)
            yield
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


def _train_sample_caption(model, recipe):
    train(model, recipe, progress=False)
    model.eval()
    images = torch.rand(2, 3, model.image_size, model.image_size)
    model.sample(["a red circle", "two blue squares"], generator=torch.Generator().manual_seed(0))
    model.reconstruct(images, ["Describe the image."] * 2, generator=torch.Generator().manual_seed(0))
    model.caption(images)


@pytest.mark.parametrize("arch", ["showo-vq", "showo-clip", "janus"])
def test_mini_train_sample_caption_is_warning_free(arch):
    torch.manual_seed(0)
    model = registry.build(arch)
    with quiet():
        _train_sample_caption(model, replace(preset(arch, "ci"), steps=2, warmup=1, device="cpu"))


def test_tiny_janus_pro_train_sample_caption_is_warning_free():
    model = janus_pro.load(tiny=True)
    recipe = replace(preset("janus-pro"), steps=2, warmup=1, batch=2, n_images=8, device="cpu")
    with quiet():
        _train_sample_caption(model, recipe)
