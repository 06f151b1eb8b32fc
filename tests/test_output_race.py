"""Writers racing on one output file: without --overwrite exactly one publishes it and the others get the one-line
'exists' error; the rename that published it replaced whatever another writer had put there meanwhile."""

import threading

import pytest

import swinzoo
from swinzoo import io as swinzoo_io
from swinzoo.errors import SwinzooError


@pytest.mark.parametrize("to", ["swinzoo", "official"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_racing_writers_of_one_output(to, overwrite, tmp_path, monkeypatch):
    out = tmp_path / ("m.safetensors" if to == "swinzoo" else "m.pth")
    both_written = threading.Barrier(2, timeout=60)
    as_new_file = swinzoo_io._as_new_file

    def written(path):  # both files complete, neither published: each writer found no output when it checked
        as_new_file(path)
        both_written.wait()

    monkeypatch.setattr(swinzoo_io, "_as_new_file", written)
    results = []

    def write():
        try:
            results.append(swinzoo.export("swin_n_64", to, out, overwrite=overwrite).output)
        except SwinzooError as e:
            results.append(str(e))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if overwrite:  # told to replace: the last rename wins, both succeed
        assert len(results) == 2 and all(r == out for r in results), results
    else:
        assert sorted(map(str, results)) == sorted(
            [str(out), f"{out} exists; pass --overwrite to replace it, or choose another output (in Python: "
                       "--overwrite is overwrite=True)"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporaries left
    assert swinzoo.load_model(out).config.img_size == 64


def test_a_graph_export_publishes_without_replacing_unless_told(tmp_path, monkeypatch):
    """pt2 and onnx files went through a plain rename: a racing writer's file was replaced without --overwrite."""
    import contextlib

    from swinzoo.converters import graph

    asked = []

    @contextlib.contextmanager
    def recording(path, overwrite=True):
        asked.append(overwrite)
        raise RuntimeError("stop here")
        yield  # pragma: no cover

    monkeypatch.setattr(graph, "export_program", lambda model, config: None)  # the graph itself is not the point
    monkeypatch.setattr(graph, "atomic_path", recording)
    for overwrite in (False, True):
        with pytest.raises(RuntimeError, match="stop here"):
            swinzoo.export("swin_n_64", "pt2", tmp_path / "m.pt2", overwrite=overwrite)
    assert asked == [False, True]
