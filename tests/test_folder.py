"""reca_nb.world.folder: your own images for RecA. Broken files are skipped and counted, odd modes converted, bad
folders refused with clear errors; FolderBatches samples like data.Batches; train(data=...) uses it."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reca_nb.world.folder import FolderBatches, ImageFolder, load_image
from reca_nb.world.prompts import load_templates


pytestmark = pytest.mark.usefixtures("own_home_one_thread")


def rgb(color, size=(40, 40)):
    return Image.new("RGB", size, color)


@pytest.fixture
def photos(tmp_path):
    """3 good images in nested folders (one .JPG) + captions for two of them."""
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    rgb((255, 0, 0)).save(root / "red.png")
    rgb((0, 255, 0)).save(root / "a" / "green.JPG", quality=95)
    rgb((0, 0, 255)).save(root / "a" / "b" / "blue.webp")
    (root / "red.txt").write_text("a red square\n")
    (root / "a" / "green.txt").write_text("a green square")
    (root / "notes.md").write_text("not an image")
    (root / ".hidden").mkdir()
    rgb((9, 9, 9)).save(root / ".hidden" / "skip.png")
    return root


def test_scan_is_recursive_sorted_and_ignores_other_files(photos):
    folder = ImageFolder(photos)
    assert [p.name for p in folder.files] == ["blue.webp", "green.JPG", "red.png"]  # a/b/, a/, then root
    assert {p.name: t for p, t in folder.captions.items()} == {"red.png": "a red square",
                                                                "green.JPG": "a green square"}
    images, texts = folder.pool(16, progress=False)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)
    means = images.float().mean((2, 3)) / 255
    assert means[0].argmax() == 2 and means[1].argmax() == 1 and means[2].argmax() == 0  # blue, green, red
    assert texts == [None, "a green square", "a red square"]
    assert "3 image files, 2 with captions, skipped: none" in folder.report()


def test_corrupt_truncated_and_tiny_files_are_skipped_and_counted(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    rgb((200, 100, 0), (64, 64)).save(root / "good.png")
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    (root / "text.png").write_text("hello")
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / "full.png")
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(arr).save(root / "trunc.jpg", quality=90)
    jpg = (root / "trunc.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    rgb((1, 2, 3), (1, 1)).save(root / "dot.png")
    (root / "empty.webp").write_bytes(b"")
    folder = ImageFolder(root)
    with pytest.warns(UserWarning, match=r"skipped 6 of 8 files"):
        images, _ = folder.pool(32, progress=False)
    assert len(images) == 2  # good.png + full.png
    reasons = {p.name: r.split(":")[0] for p, r in folder.skipped.items()}
    assert reasons == {"garbage.jpg": "unreadable", "text.png": "unreadable", "truncated.png": "unreadable",
                       "trunc.jpg": "unreadable", "dot.png": "too small", "empty.webp": "unreadable"}
    assert "5 unreadable, 1 too small" in folder.report()


def test_report_counts_what_was_read(tmp_path):
    rgb((1, 2, 3)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    folder = ImageFolder(tmp_path)
    assert folder.report() == f"{tmp_path}: 2 image files, 0 with captions (not read yet)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # warn=False: the caller prints report() instead
        folder.pool(8, progress=False, warn=False)
    assert folder.report() == f"{tmp_path}: read 1 of 2 image files, 0 with captions, skipped: 1 unreadable"


def test_modes_become_rgb(tmp_path):
    root = tmp_path / "modes"
    root.mkdir()
    Image.new("L", (20, 20), 128).save(root / "grey.png")
    Image.new("RGBA", (20, 20), (255, 255, 255, 0)).save(root / "clear.png")  # fully transparent white
    Image.new("LA", (20, 20), (255, 255)).save(root / "la.png")
    Image.new("1", (20, 20), 1).save(root / "bw.png")
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(root / "deep.png")  # I;16
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    pal.save(root / "pal.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(root / "cmyk.jpg")
    folder = ImageFolder(root)
    images, _ = folder.pool(8, progress=False)
    got = {p.name: images[i].float().mean((1, 2)).div(255).tolist() for i, p in enumerate(folder.files)}
    assert images.shape == (7, 3, 8, 8) and not folder.skipped
    assert got["grey.png"] == pytest.approx([128 / 255] * 3, abs=0.01)
    assert got["clear.png"] == pytest.approx([0, 0, 0], abs=0.01)  # alpha 0 composited on black
    assert got["la.png"] == pytest.approx([1, 1, 1], abs=0.01)
    assert got["bw.png"] == pytest.approx([1, 1, 1], abs=0.01)
    assert got["deep.png"] == pytest.approx([1, 1, 1], abs=0.01)
    assert got["pal.png"] == pytest.approx([0, 0, 1], abs=0.01)
    assert got["cmyk.jpg"][0] > 0.8 and got["cmyk.jpg"][1] < 0.2  # magenta ink -> red-ish + blue RGB


def test_non_square_images_are_centre_cropped(tmp_path):
    img = Image.new("RGB", (90, 30), (255, 0, 0))  # red | green | red, 30 px each
    img.paste((0, 255, 0), (30, 0, 60, 30))
    img.save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 12)
    assert x.shape == (1, 3, 12, 12)
    assert x[0, 1].mean() > 0.99 and x[0, 0].mean() < 0.01  # only the green middle square is left


def test_big_photo_is_shrunk_exactly(tmp_path):
    Image.new("RGB", (2000, 1500), (10, 200, 30)).save(tmp_path / "big.jpg", quality=95)
    x = load_image(tmp_path / "big.jpg", 16)
    assert x.shape == (1, 3, 16, 16)
    assert x[0, :, 8, 8].mul(255).tolist() == pytest.approx([10, 200, 30], abs=4)


def test_bad_folders_fail_with_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path / "empty")
    rgb((1, 1, 1)).save(tmp_path / "one.png")
    with pytest.raises(NotADirectoryError):
        ImageFolder(tmp_path / "one.png")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"nope")
    folder = ImageFolder(tmp_path / "broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 1 files"):
            folder.pool(8, progress=False)


def test_captions_from_csv_and_jsonl(photos, tmp_path):
    csv_file = tmp_path / "caps.csv"
    csv_file.write_text("file,caption\nred.png,red one\na/b/blue.webp,blue one\nmissing.png,ghost\n")
    with pytest.warns(UserWarning, match="1 of 3 caption rows"):
        folder = ImageFolder(photos, captions=csv_file)
    assert {p.name: t for p, t in folder.captions.items()} == {"red.png": "red one", "blue.webp": "blue one"}
    jl = tmp_path / "caps.jsonl"
    jl.write_text(json.dumps({"image": "a/green.JPG", "text": "green one"}) + "\n\n")
    folder = ImageFolder(photos, captions=jl)
    assert {p.name: t for p, t in folder.captions.items()} == {"green.JPG": "green one"}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,words\nred.png,x\n")
    with pytest.raises(ValueError, match="need an image column"):
        ImageFolder(photos, captions=bad)
    with pytest.raises(FileNotFoundError):
        ImageFolder(photos, captions=tmp_path / "none.csv")
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        ImageFolder(photos, captions=photos / "red.txt")


def test_folder_batches_sample_like_data_batches(photos):
    folder = ImageFolder(photos)
    a = folder.batches(16, seed=3)
    b = FolderBatches(folder, 16, seed=3)
    x1, t1 = a.reca(5)
    x2, t2 = b.reca(5)
    assert x1.shape == (5, 3, 16, 16) and x1.dtype == torch.float32 and 0 <= x1.min() and x1.max() <= 1
    assert torch.equal(x1, x2) and t1 == t2  # a pure function of the seed
    templates = set(load_templates("diverse"))
    assert all(t in templates for t in t1)  # RecA text is a template, never the caption
    state = a.state()
    first = a.i2t(6)
    a.set_state(state)
    again = a.i2t(6)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert set(first[1]) <= {"a red square", "a green square"}  # I2T only from captioned images
    imgs, prompts = a.t2i(4)
    assert imgs.shape == (4, 3, 16, 16) and set(prompts) <= {"a red square", "a green square"}
    assert FolderBatches(folder, 16, prompts="single").reca(2)[1] == ["Describe the image."] * 2


def test_i2t_without_captions_says_what_to_do(tmp_path):
    rgb((5, 5, 5)).save(tmp_path / "x.png")
    batches = ImageFolder(tmp_path).batches(8)
    batches.reca(2)  # RecA needs no captions
    with pytest.raises(ValueError, match="lambda_i2t=0"):
        batches.i2t(2)


def test_train_draws_from_the_folder(photos, monkeypatch, tmp_path):
    """The train(data=...) hook: every RecA target comes from the folder's images."""
    from reca_nb.recipe import Recipe
    from reca_nb.train import train
    from tests.toy_umm import ToyConfig, ToyUMM

    monkeypatch.setenv("RECA_NB_HOME", str(tmp_path / "home"))
    seen = []

    class Spy(ToyUMM):
        def reca_loss(self, und, templates, target):
            seen.append(target.clone())
            return super().reca_loss(und, templates, target)

    torch.manual_seed(0)
    model = Spy(ToyConfig())
    folder = ImageFolder(photos)
    rec = Recipe(arch="toy", steps=3, batch=4, warmup=1, log_every=1, save_every=0, device="cpu", und_res=16,
                 lambda_i2t=1.0, i2t_ratio=0.5)
    history = train(model, rec, data=folder.batches, progress=False)
    assert [r["step"] for r in history] == [1, 2, 3] and all(np.isfinite(r["loss_i2t"]) for r in history)
    pool = folder.pool(model.image_size)[0].float() / 255
    for batch in seen:
        assert all(any(torch.allclose(img, p, atol=1e-6) for p in pool) for img in batch)
