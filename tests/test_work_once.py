"""Each command does its expensive work once, counted with a wrapper around the function that does it (not timed)."""

import torch

from swinzoo.train import recon_grid


def counting(monkeypatch, owner, name: str) -> list:
    """Replace `owner.name` by a wrapper recording each call's arguments; returns the record."""
    calls, real = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_a_reconstruction_picture_is_encoded_once_for_both_files(tmp_path, monkeypatch):
    from PIL import Image

    saves = counting(monkeypatch, Image.Image, "save")
    torch.manual_seed(0)
    images, reconstruction = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    mask = torch.randint(0, 2, (2, 2, 2))
    path = recon_grid.write_reconstructions(tmp_path, 7, images, mask, reconstruction, 32, "step 7")
    assert path == tmp_path / "step_000007.png" and len(saves) == 1
    assert (tmp_path / "latest.png").read_bytes() == path.read_bytes()
