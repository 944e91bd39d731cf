import pytest
from PIL import Image

from diffuscope.checks.errors import UsageError
from diffuscope.io.pngmeta import a1111_text, parse_a1111, read_png_params, save_png

PARAMS = {"prompt": "seven", "negative_prompt": "", "steps": 25, "sampler": "DPM++ 2M", "spacing": "karras",
          "guidance": 2.0, "seed": 42, "width": 28, "height": 28, "model_name": "mnist, v1", "version": "0.1.0"}


def test_a1111_text_format():
    text = a1111_text(PARAMS)
    lines = text.split("\n")
    assert lines[0] == "seven"
    assert len(lines) == 2  # no negative prompt line when empty
    assert lines[1].startswith("Steps: 25, Sampler: DPM++ 2M, Schedule type: karras, CFG scale: 2, Seed: 42, "
                               "Size: 28x28, ")
    assert 'Model: "mnist, v1"' in lines[1]  # a value with a comma is JSON-quoted


def test_a1111_round_trip_with_negative_prompt():
    text = a1111_text({**PARAMS, "negative_prompt": "blurry"})
    assert text.split("\n")[1] == "Negative prompt: blurry"
    parsed = parse_a1111(text)
    assert parsed["Steps"] == "25" and parsed["Sampler"] == "DPM++ 2M" and parsed["Model"] == "mnist, v1"
    assert parsed["Prompt"] == "seven"


def test_png_round_trip_and_no_overwrite(tmp_path):
    img = Image.new("L", (28, 28), 128)
    path = save_png(img, tmp_path / "a.png", PARAMS)
    text, params = read_png_params(path)
    assert text == a1111_text(PARAMS)
    assert params["schema"] == 1 and params["seed"] == 42 and params["sampler"] == "DPM++ 2M"
    with pytest.raises(UsageError, match="already exists"):
        save_png(img, path, PARAMS)


def test_plain_png_has_no_params(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "plain.png")
    assert read_png_params(tmp_path / "plain.png") == (None, None)
    with pytest.raises(UsageError, match="not found"):
        read_png_params(tmp_path / "missing.png")
