"""Bad input: one line on stderr naming the problem and the fix, exit code 2, and no output file left."""


import pytest
import torch

from swinzoo import SwinTransformer, SwinzooError, create_model
from swinzoo.converters.official import from_official, read_official, to_official
from swinzoo.weight_transfer import transfer

from .conftest import V1, V2, fixture_pth, one_error_line, run_cli


def assert_clean_failure(tmp_path, code, out_name, err, *needles):
    assert code == 2, err  # bad input; an unexpected exception also prints one line, but exits 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / out_name).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def convert(tmp_path, capsys, src, *extra):
    return run_cli(["convert", src, "-o", tmp_path / "out.safetensors", *extra], capsys)


def test_missing_file(tmp_path, capsys):
    code, _, err = convert(tmp_path, capsys, tmp_path / "nope.pth")
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "nope.pth", "does not exist")


def test_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "notes.pth"
    bad.write_text("just some text\n")
    code, _, err = convert(tmp_path, capsys, bad)
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "not a PyTorch checkpoint")


def test_truncated_file(tmp_path, capsys):
    data = fixture_pth(V1).read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = convert(tmp_path, capsys, bad)
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "truncated", "download it again")


class ExperimentConfig:
    model = "swin"


def test_training_checkpoint_needs_trust_flag(tmp_path, capsys):
    ckpt = torch.load(fixture_pth(V1), weights_only=True)
    ckpt["config"] = ExperimentConfig()  # a class of the user's: its pickle may run code (yacs and argparse do not)
    src = tmp_path / "ckpt_epoch_3.pth"
    torch.save(ckpt, src)
    code, _, err = convert(tmp_path, capsys, src)
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "--trust-checkpoint")
    code, _, err = convert(tmp_path, capsys, src, "--trust-checkpoint")
    assert code == 0, err
    assert (tmp_path / "out.safetensors").exists()


def test_arch_contradicts_file(tmp_path, capsys):
    code, _, err = convert(tmp_path, capsys, fixture_pth(V1), "--arch", "swin_t_224")
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "--arch swin_t_224", "patch_embed.proj.weight",
                         "(24, 3, 4, 4)", "(96, 3, 4, 4)")


def test_arch_with_other_head_counts(tmp_path, capsys):
    """swin_t_c24_256 differs from swin_t only in heads (and window): the first differing key is named."""
    sd = {k: v.to(torch.bfloat16) for k, v in create_model("swin_t_224").state_dict().items()}
    src = tmp_path / "t.pth"
    torch.save({"model": sd}, src)
    code, _, err = convert(tmp_path, capsys, src, "--arch", "swin_t_c24_256")
    assert_clean_failure(tmp_path, code, "out.safetensors", err,
                         "layers.0.blocks.0.attn.relative_position_bias_table", "(169, 3)", "(225, 4)")


def test_arch_contradicting_v2_pretrained_windows(tmp_path, capsys):
    """An official V2 file keeps relative_coords_table, whose values tell the windows it was pretrained at: an
    --arch with other pretrained windows would rebuild the table and change every logit (6e-3 on Swin-T)."""
    cfg = create_model("swinv2_n_64_w4").config.replace(pretrained_window_sizes=(3, 3, 3, 0))
    sd = SwinTransformer(cfg).state_dict()
    src = tmp_path / "v2.pth"
    torch.save(to_official(sd, cfg), src)
    code, _, err = convert(tmp_path, capsys, src, "--arch", "swinv2_n_64_w4")
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "--arch swinv2_n_64_w4 contradicts",
                         "layers.0.blocks.0.attn.relative_coords_table", "pretrained windows (3, 3, 3,")
    code, _, err = convert(tmp_path, capsys, src)  # the file alone tells them
    assert code == 0, err


def test_resolution_patch_cannot_tile(tmp_path, capsys):
    code, _, err = convert(tmp_path, capsys, fixture_pth(V1), "--res", 230)
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "patch size 4", "--res")


def test_resolution_window_cannot_tile(tmp_path, capsys):
    code, _, err = convert(tmp_path, capsys, fixture_pth(V1), "--res", 384, "--window", 7)
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "not a multiple of window 7", "--window", "--res")


def test_transfer_between_head_counts(tmp_path, capsys):
    sd, cfg = from_official(read_official(fixture_pth(V2)))
    with pytest.raises(SwinzooError, match="different head counts") as e:
        transfer(sd, cfg, cfg.replace(num_heads=(2, 4, 8, 16)))
    assert "\n" not in str(e.value)
    # the same through the CLI: an official file whose heads contradict --arch never reaches a transfer
    src = tmp_path / "v2.pth"
    torch.save(to_official(sd, cfg), src)
    code, _, err = convert(tmp_path, capsys, src, "--arch", "swinv2_t_256_w8")
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "contradicts")


def test_unknown_zoo_name(tmp_path, capsys):
    code, _, err = run_cli(["info", "swin_b_2244"], capsys)
    assert code == 2 and "did you mean swin_b_224" in err and len(err.strip().splitlines()) == 1
    code, _, err = convert(tmp_path, capsys, fixture_pth(V1), "--arch", "swinv2_t_265_w8")
    assert_clean_failure(tmp_path, code, "out.safetensors", err, "unknown model name", "swinv2_t_256_w8")


def explode(tensors, path, metadata=None):
    """A write that fails half-way: some bytes at the path it was given, then the error."""
    with open(path, "wb") as f:
        f.write(b"partial")
    raise OSError("disk full")


def test_failed_write_leaves_nothing(tmp_path, capsys, monkeypatch):
    import swinzoo.converters.native

    monkeypatch.setattr(swinzoo.converters.native, "save_file", explode)
    code, _, err = run_cli(["convert", fixture_pth(V1), "-o", tmp_path / "out.safetensors"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "disk full" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_convert(tmp_path, capsys, monkeypatch):
    """--overwrite given, so that the convert gets past the existing-output check (without it, that refusal was what
    left the file alone): a source that does not exist, then a write that fails half-way, keep the old file."""
    import swinzoo.converters.native

    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    code, _, err = run_cli(["convert", tmp_path / "missing.pth", "-o", out, "--overwrite"], capsys)
    assert code == 2 and out.read_bytes() == b"old"
    one_error_line(err, "missing.pth", "does not exist")
    monkeypatch.setattr(swinzoo.converters.native, "save_file", explode)
    code, _, err = run_cli(["convert", fixture_pth(V1), "-o", out, "--overwrite"], capsys)
    assert code == 1 and out.read_bytes() == b"old"
    one_error_line(err, "disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_a_batch_too_large_for_memory_is_one_line_naming_the_fix(capsys):
    """torch's allocator refusing (here 491 TB, beyond any address space, whatever the kernel's overcommit) is the
    input's doing: one line saying what to make smaller, exit 2; not "unexpected ... report it" under a stopped bar."""
    code, out, err = run_cli(["bench", "swin_n_64", "--batch-size", 10**10, "--reps", 1, "--warmup", 0], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err, "out of memory (", "GiB asked for at once)", "use a smaller resolution, batch or class")
    assert "unexpected" not in line


@pytest.mark.parametrize("raised", [MemoryError(), torch.OutOfMemoryError(
    "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB")])
def test_other_failed_allocations_are_one_line_too(raised, tmp_path, capsys, monkeypatch):
    import swinzoo.conversion

    def allocate(*args, **kwargs):
        raise raised

    monkeypatch.setattr(swinzoo.conversion, "read_transferred", allocate)
    code, _, err = convert(tmp_path, capsys, "swin_n_64")
    assert code == 2
    line = one_error_line(err, "out of memory (", "use a smaller resolution, batch or class count")
    assert ("20.00 GiB asked for at once on the GPU" in line) == isinstance(raised, torch.OutOfMemoryError), line


@pytest.mark.parametrize("message", ["DataLoader worker (pid(s) 4242) exited unexpectedly",
                                     "DataLoader worker (pid 4242) is killed by signal: Terminated"])
def test_what_fails_after_a_signal_is_the_interruption(message, capsys, monkeypatch):
    """Signalled with its process group, the main process can meet its dead loader workers before its own
    KeyboardInterrupt is through (a loader read in Lightning's shutdown, the SIGCHLD handler reset): the run ended
    in "unexpected RuntimeError: DataLoader worker (pid(s) ...) exited unexpectedly", exit 1 (2 of 3 runs of
    test_finetune's group SIGTERM test on a loaded host). Once a signal came, what fails is the interruption; a
    worker dying without one stays a failure to report."""
    from swinzoo import errors

    def signalled():
        errors.note_signal()  # what the CLI's SIGTERM / SIGINT handler does first
        raise RuntimeError(message)

    def died():
        raise RuntimeError(message.replace("Terminated", "Killed"))

    monkeypatch.setattr(errors, "SIGNALLED", False)
    assert errors.exit_code(signalled) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
    assert errors.exit_code(died) == 1  # the next command in the same process (a test, a notebook) starts afresh
    assert "unexpected" in capsys.readouterr().err


def test_a_failure_while_an_interrupt_unwinds_is_the_interruption(capsys):
    """Called in-process (`cli_main`, no CLI signal handler), a Ctrl-C while Lightning writes last.ckpt raised its
    KeyboardInterrupt inside torch's writer, whose close then failed with "[enforce fail at inline_container.cc]":
    "unexpected RuntimeError", exit 1. What failed because of the interrupt is the interruption."""
    from swinzoo import errors

    def interrupted_mid_write():
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 448")

    def failed():
        try:
            raise ValueError("a bad row")
        except ValueError:
            raise RuntimeError("failed while handling another error") from None

    assert errors.exit_code(interrupted_mid_write) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
    assert errors.exit_code(failed) == 1
    assert "unexpected" in capsys.readouterr().err
