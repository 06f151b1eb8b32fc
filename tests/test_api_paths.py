"""Every public function of sources.py and conversion.py takes an `os.PathLike` wherever it takes a path string."""

import json

import pytest

import swinzoo


class Where:
    """An os.PathLike that is not a pathlib.Path (so nothing may rely on Path methods)."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path


@pytest.fixture(scope="module")
def nano_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("paths") / "nano.safetensors"
    swinzoo.convert("swin_n_64", out)
    return out


def test_readers_take_path_objects(nano_file):
    for src in (nano_file, Where(nano_file)):
        assert swinzoo.read_checkpoint(src).config.num_classes == 10
        assert swinzoo.load_model(src).config.num_classes == 10
        assert swinzoo.load_model(src, features_only=True).config.is_backbone
        assert swinzoo.load_simmim(src).config.embed_dim == 32
        info = swinzoo.model_info(src)
        assert info["name"] == str(nano_file) and info["params"] > 0
        json.dumps(info)  # what `swinzoo info --json` prints


def test_zoo_names_as_path_objects(nano_file):
    assert swinzoo.model_info(Where("swin_n_64"))["tag"]
    assert swinzoo.create_model(Where("swin_n_64"), pretrained=True).config.num_classes == 10


def test_convert_and_export_take_path_objects(nano_file, tmp_path):
    done = swinzoo.convert(Where(nano_file), Where(tmp_path / "moved.safetensors"), res=128)
    assert done.output == tmp_path / "moved.safetensors" and done.config.window_size == 8
    provenance = swinzoo.load_model(tmp_path / "moved.safetensors").provenance
    assert provenance["transfer"]["from"]["img_size"] == 64
    swinzoo.export(Where(nano_file), "official", Where(tmp_path / "official.pth"))
    assert swinzoo.read_checkpoint(Where(tmp_path / "official.pth")).config.num_classes == 10
