"""The loopback Hub answers the real huggingface_hub client: create, pre-upload, commit, branch, info, download."""

import os
import subprocess
import sys
import textwrap

from .hub_emulator import HubEmulator

CLIENT = textwrap.dedent("""
    import pathlib, sys
    from huggingface_hub import HfApi, snapshot_download
    folder = pathlib.Path(sys.argv[1])
    api = HfApi()
    api.create_repo("acme/x", exist_ok=True)
    api.create_repo("acme/x", exist_ok=True)
    api.upload_folder(repo_id="acme/x", folder_path=folder, commit_message="Add model")
    api.create_branch("acme/x", branch="dev", exist_ok=True)
    assert api.file_exists("acme/x", "README.md") and not api.file_exists("acme/x", "nope.md")
    path = pathlib.Path(snapshot_download("acme/x"))
    assert (path / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
    print("ok")
""")


def test_real_client_round_trip(tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(70_000))
    (folder / "README.md").write_text("---\nlibrary_name: swinzoo\n---\n# card\n")
    with HubEmulator(token="hf_test") as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_test", HF_HOME=str(tmp_path / "home"),
                   HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        run = subprocess.run([sys.executable, "-c", CLIENT, str(folder)], env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert hub.files("acme/x")["weights.bin"] == (folder / "weights.bin").read_bytes()
        assert hub.repos["acme/x"].branches.keys() == {"main", "dev"}
        assert hub.calls[:3] == ["create", "create", "preupload"] and "commit" in hub.calls


def test_wrong_token_is_refused(tmp_path):
    with HubEmulator(token="hf_good") as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_bad", HF_HOME=str(tmp_path / "home"))
        env.pop("HF_HUB_OFFLINE", None)  # else the client refuses before asking: the 401 is what is tested
        code = "from huggingface_hub import HfApi; HfApi().create_repo('acme/y')"
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and "401" in run.stderr
        assert hub.repos == {}
