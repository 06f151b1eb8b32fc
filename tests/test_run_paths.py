"""Paths as users give them: links, names with spaces and non-ASCII letters, run folders moved or used from another
folder, read-only folders, and two processes on one run folder."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import swinzoo
from swinzoo.converters.native import PROVENANCE_KEY
from swinzoo.io import safetensors_metadata
from tests.conftest import one_error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
NANO = Path(swinzoo.__file__).parent / "data" / "swin_n_64.safetensors"
FAST = ["--batch-size", "4", "--num-workers", "0", "--trainer.limit_val_batches", "1",
        "--trainer.enable_model_summary", "false"]


def image_folder(root: Path) -> Path:
    from PIL import Image

    from swinzoo.train.shapes import render

    for split in ("train", "val"):
        for label, name in enumerate(("solid", "frame")):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                image = Image.fromarray(render(label, 64, seed=i + 10 * (split == "val")).permute(1, 2, 0).numpy())
                image.save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def read_only(tmp_path):
    """`read_only(folder)` makes `folder` read-only for this process: a read-only bind mount where it may mount one
    (root, whom permissions do not stop), else chmod a-w; undone at the end of the test."""
    undo = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
                    undo.append(lambda p=p: p.chmod(0o755))
            return folder
        for args in (["mount", "--bind", folder, folder], ["mount", "-o", "remount,bind,ro", folder]):
            if subprocess.run([str(a) for a in args], capture_output=True).returncode != 0:
                subprocess.run(["umount", str(folder)], capture_output=True)
                pytest.skip("no read-only folder here: root without the right to mount")
        undo.append(lambda: subprocess.run(["umount", str(folder)], capture_output=True))
        return folder

    yield make
    for step in reversed(undo):
        step()


@pytest.mark.parametrize("to", ["timm", "hf"])
def test_a_folder_export_into_a_link_to_an_empty_folder_fills_that_folder(to, tmp_path, capsys):
    """The rename of the new folder onto the link failed (NotADirectoryError, exit 1): the link stays, the export
    goes into the folder it names."""
    target = tmp_path / "expört target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target.name)
    code, _, err = run_cli(["export", "swinv2_n_64_w4", "--to", to, "-o", link], capsys)
    assert code == 0, err
    assert link.is_symlink() and "config.json" in os.listdir(target)
    assert swinzoo.read_checkpoint(target).config.num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expört target", "link"]  # no temporary left


def test_a_folder_export_into_a_dangling_link_is_one_line(tmp_path, capsys):
    (tmp_path / "link").symlink_to("nowhere")
    code, _, err = run_cli(["export", "swin_n_64", "--to", "timm", "-o", tmp_path / "link"], capsys)
    assert code == 2
    one_error_line(err, "link is a link to nowhere, which does not exist")
    assert os.listdir(tmp_path) == ["link"]


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_out_a_dangling_link_is_one_line_before_the_run(verb, tmp_path, capsys):
    """mkdir through the link failed after the plan was printed (FileExistsError, exit 1)."""
    (tmp_path / "run").symlink_to("gone")
    code, out, err = run_cli([verb, "--from", "swin_n_64", "--max-steps", "1", "--out", tmp_path / "run", *FAST],
                             capsys)
    assert code == 2 and "training from" not in out
    one_error_line(err, f"--out {tmp_path / 'run'} is a link to gone, which does not exist")
    assert os.listdir(tmp_path) == ["run"]


def test_push_dry_run_into_a_read_only_folder_is_one_line(read_only, tmp_path, capsys):
    """The write failed as an OS error (exit 1) after the source was read."""
    (tmp_path / "ro").mkdir()
    folder = read_only(tmp_path / "ro")
    code, _, err = run_cli(["push", NANO, "--repo", "acme/nano", "--dry-run", folder / "preview"], capsys)
    assert code == 2
    one_error_line(err, f"cannot write in {folder} (", "choose an output path in a folder you can write")


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_a_run_on_a_relative_data_folder_resumes_moved_and_from_another_folder(verb, tmp_path, capsys, monkeypatch):
    """run.json held --data as given ("dä ta", relative to where the run started): a resume from anywhere else
    failed ("no such folder"), with no flag to fix it (--data cannot change a resumed run)."""
    (tmp_path / "work").mkdir()
    image_folder(tmp_path / "work" / "dä ta")
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run_cli([verb, "--from", "swin_n_64", "--data", "dä ta", "--max-steps", "1", "--out", "rün 1",
                            *FAST], capsys)
    assert code == 0, err
    moved = tmp_path / "else where" / "rün 1"
    moved.parent.mkdir()
    (tmp_path / "work" / "rün 1").rename(moved)
    monkeypatch.chdir(moved.parent)
    code, _, err = run_cli([verb, "--resume", moved, "--max-steps", "2"], capsys)
    assert code == 0, err
    assert json.loads((moved / "metrics.json").read_text())["global_step"] == 2
    if verb == "finetune":  # so does eval of the run, which reads its data from run.json
        code, out, err = run_cli(["eval", moved, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["n"] == 8
    # the weights' provenance keeps --data as given: the model card shows no folder of this machine
    provenance = json.loads(safetensors_metadata(moved / "model.safetensors")[PROVENANCE_KEY])
    assert provenance["dataset"] == "dä ta"


# a run in another process that stops before the training steps listed, until the test lets it go on
PAUSED_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import lightning as L
    import swinzoo

    verb, out, flags = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    class Pause(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            step = trainer.global_step
            if step in (0, 2):
                (flags / f"at{step}").touch()
                while not (flags / f"go{step}").exists():
                    time.sleep(0.05)

    getattr(swinzoo, verb)("swin_n_64", data="shapes", out=str(out), max_steps=3, ckpt_every=1, batch_size=4,
                           num_workers=0, trainer={"limit_val_batches": 1, "callbacks": [Pause()]})
""")


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.05)


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_a_second_process_on_a_running_runs_folder_is_refused(verb, tmp_path, capsys):
    """A run with the same --out started while another runs there took its folder over before the first checkpoint
    (the folder looked left by a killed run) and trained into it, or, after it, was told to --resume a run still
    running; a --resume of a running run trained beside it."""
    out, flags = tmp_path / "rün", tmp_path / "flags"
    flags.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, verb, out, flags], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(flags / "at0", proc)  # run.json written, no checkpoint yet
        run_json = (out / "run.json").read_text()
        code, _, err = run_cli([verb, "--from", "swinv2_n_64_w4", "--max-steps", "1", "--out", out, *FAST], capsys)
        assert code == 2
        one_error_line(err, f"--out {out} is in use", f"swinzoo process {proc.pid}", "pick another --out")
        code, _, err = run_cli([verb, "--resume", out, "--max-steps", "5"], capsys)  # not "needs last.ckpt"
        assert code == 2
        one_error_line(err, f"--resume {out}: {out} is in use", f"swinzoo process {proc.pid}")
        assert (out / "run.json").read_text() == run_json
        (flags / "go0").touch()
        wait_for(flags / "at2", proc)  # last.ckpt at step 1 and 2
        for args in ([verb, "--resume", out, "--max-steps", "5"],
                     [verb, "--from", "swinv2_n_64_w4", "--max-steps", "1", "--out", out, *FAST]):
            code, _, err = run_cli(args, capsys)
            assert code == 2
            one_error_line(err, f"{out} is in use", f"swinzoo process {proc.pid}", "wait for it to end")
        (flags / "go2").touch()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    finally:
        proc.kill()
    run = json.loads((out / "run.json").read_text())
    assert run["source"] == "swin_n_64" and "resumed" not in run["provenance"]
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3
    code, _, err = run_cli([verb, "--resume", out, "--max-steps", "4"], capsys)  # the lock went with the process
    assert code == 0, err


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_a_read_only_run_folder_evaluates_and_its_resume_is_one_line(verb, read_only, tmp_path, capsys):
    """The resume failed as an OS error (exit 1) once Lightning made its log folder, after the plan was printed."""
    out = tmp_path / "rün"
    code, _, err = run_cli([verb, "--from", "swin_n_64", "--max-steps", "1", "--out", out, *FAST], capsys)
    assert code == 0, err
    read_only(out)
    code, stdout, err = run_cli([verb, "--resume", out, "--max-steps", "2"], capsys)
    assert code == 2 and "training from" not in stdout
    one_error_line(err, f"--resume {out}: cannot write in {out} (", "copy the run to a folder you can write")
    if verb == "finetune":
        code, stdout, err = run_cli(["eval", out, "--json", "--batch-size", "100"], capsys)
        assert code == 0, err
        assert json.loads(stdout)["n"] == 1000



@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_config_yaml_replays_the_run_as_its_header_says_from_another_folder(verb, tmp_path, capsys, monkeypatch):
    """The header's command line held the config's path unquoted (a folder with a space split it in two), and the
    config held a relative --from as given, which another folder does not have."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    swinzoo.convert("swin_n_64", "mö del.safetensors")
    code, _, err = run_cli([verb, "--from", "mö del.safetensors", "--max-steps", "1", "--out", "rün 1", *FAST],
                           capsys)
    assert code == 0, err
    replay = (tmp_path / "work" / "rün 1" / "config.yaml").read_text().splitlines()[1].removeprefix("#   ")
    args = shlex.split(replay.replace("NEW_FOLDER", shlex.quote(str(tmp_path / "rün 2"))))
    assert args[:2] == ["swinzoo", verb]
    (tmp_path / "else").mkdir()
    monkeypatch.chdir(tmp_path / "else")
    code, _, err = run_cli(args[1:], capsys)
    assert code == 0, err
    assert (tmp_path / "rün 2" / "model.safetensors").is_file()



def test_a_path_from_home_as_a_shell_would_have_expanded_it(tmp_path, capsys, monkeypatch):
    """`~/` reaches swinzoo where the shell leaves it (quoted, after `--flag=`): it made a folder named `~` in the
    working folder, where `rm -rf ~` then means something else."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for args in (["convert", "swin_n_64", "-o", "~/m.safetensors"], ["info", "~/m.safetensors", "--json"],
                 ["export", "~/m.safetensors", "--to=timm", "--output=~/timm folder"]):
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
    assert sorted(os.listdir(tmp_path / "home")) == ["m.safetensors", "timm folder"]
    assert os.listdir(tmp_path / "work") == []


@pytest.mark.parametrize("recorded", ["absolute", "relative"])
def test_a_resume_whose_data_is_not_there_says_how_to_bring_it_back(recorded, tmp_path, capsys, monkeypatch):
    """It said `--data X: no such folder (built-in datasets: ...)`, while --data cannot change a resumed run. A
    relative path is what run.json held before it recorded the absolute one."""
    data = image_folder(tmp_path / "dä ta")
    out = tmp_path / "rün"
    code, _, err = run_cli(["finetune", "--from", "swin_n_64", "--data", data, "--max-steps", "1", "--out", out,
                            *FAST], capsys)
    assert code == 0, err
    if recorded == "absolute":
        data.rename(tmp_path / "moved")
    else:
        run = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps({**run, "data": "dä ta"}))
        monkeypatch.chdir(out)
    code, stdout, err = run_cli(["finetune", "--resume", out, "--max-steps", "2"], capsys)
    assert code == 2 and "training from" not in stdout
    if recorded == "absolute":
        one_error_line(err, f"--resume {out}: the run's data {data} ({out / 'run.json'}) is not there",
                       f"ln -s NEW_PLACE '{data}'")
    else:
        one_error_line(err, f"--resume {out}: the run's data dä ta ({out / 'run.json'}) is relative to the folder "
                       "the run started in", f"resume from there (cd FOLDER && swinzoo finetune --resume '{out}')")


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
@pytest.mark.parametrize("flag", ["--out", "--resume", "--data"])
def test_an_empty_path_is_one_line(verb, flag, tmp_path, capsys, monkeypatch):
    """`--out "$OUT"` with OUT unset trained into runs/...; `--resume ""` said "--from SRC is required"; `--data ""`
    took the source's data."""
    monkeypatch.chdir(tmp_path)
    args = [flag, ""] if flag == "--resume" else ["--from", "swin_n_64", "--max-steps", "1", flag, "", *FAST]
    code, stdout, err = run_cli([verb, *args], capsys)
    assert code == 2 and "training from" not in stdout
    one_error_line(err, f"{flag} is empty; give a path")
    assert os.listdir(tmp_path) == []
