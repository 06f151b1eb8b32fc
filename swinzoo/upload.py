"""Push a model to the Hugging Face Hub as a folder timm and swinzoo both load, with a model card.

The folder: `model.safetensors` in timm's key layout, `config.json` that timm reads (architecture, num_classes,
num_features, pretrained_cfg, model_args) carrying the full swinzoo config under `swinzoo`, and `README.md`.
One commit through huggingface_hub (`create_repo(exist_ok=True)`, `upload_folder`); the token comes from the
environment or the huggingface_hub login, the endpoint from `HF_ENDPOINT` (read at call time). The calls run inside
`swinzoo.hub_http.hub_calls()`: each waits at most `SWINZOO_HUB_TIMEOUT` seconds (default 10; 3x for the answer to a
commit or an upload), an unreachable Hub fails at once in one line, and huggingface_hub's retry messages are silenced.
Nothing local is changed.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swinzoo.config import SwinConfig
from swinzoo.converters.objects import Source, is_path, source_name
from swinzoo.converters.simmim import is_simmim
from swinzoo.converters.timm import write_timm_folder
from swinzoo.errors import NetworkError, SwinzooError, python_api
from swinzoo.hub import check_repo_id
from swinzoo.hub_http import HubNetworkError, endpoint, hub_calls, hub_timeout, offline
from swinzoo.io import atomic_dir, check_writable_folder, read_small_text
from swinzoo.model_card import model_card
from swinzoo.run_folder import CURVES_FILE, METRICS_FILE
from swinzoo.sources import read_checkpoint

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class PushSource:
    """What gets pushed: weights (canonical keys), config, provenance and the measured metrics, if any, with the
    training curves of the run that measured them (its curves.png)."""

    state_dict: dict
    config: SwinConfig
    provenance: dict
    metrics: dict | None
    path: Path | None  # None: a model in memory
    curves: Path | None = None


def read_push_source(src: str | object, trust_checkpoint: bool = False, **reading: Any) -> PushSource:
    """A fine-tuning output folder (model.safetensors + metrics.json), a model file of any supported format, or a
    model in memory (`converters.objects`: no metrics, which measured other weights or none); `reading`:
    `read_checkpoint`'s from_format, arch and ema."""
    path = Path(src) if is_path(src) else None
    if path is not None and not path.exists():
        raise SwinzooError(f"{src} does not exist; give a fine-tuning output folder or a model file")
    try:
        source = read_checkpoint(src if path is None else path, trust_checkpoint=trust_checkpoint, **reading)
    except SwinzooError as e:  # a model in memory: its own message names it
        raise SwinzooError(f"{src} is not a model swinzoo can push ({e})") if path is not None else e from None
    src = source_name(src)
    # the pushed folder is timm's classifier layout, which holds neither of these
    if source.config.is_backbone:
        raise SwinzooError(f"{src} is a detection backbone (no head), which the pushed timm layout cannot hold: push "
                           "the classifier it came from, or share the file (swinzoo export --to mmdet or official)")
    if is_simmim(source.state_dict):
        raise SwinzooError(f"{src} is a SimMIM pretraining model (encoder + decoder), which the pushed timm layout "
                           "cannot hold: fine-tune it first (swinzoo finetune --from SRC), or export --to simmim or hf")
    metrics = run_metrics(path, source.provenance) if path is not None else None  # an object's: none measured it
    curves = (path if path.is_dir() else path.parent) / CURVES_FILE if metrics is not None else None
    curves = curves if curves is not None and curves.is_file() else None
    if curves is not None:
        check_curves(curves)
    return PushSource(source.state_dict, source.config, source.provenance, metrics, path, curves)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_curves(curves: Path) -> None:
    """The run's curves.png is copied into the public repo as it is: a link (a run folder unpacked from someone
    else's archive) could point at the user's token or keys, so only a plain PNG file goes."""
    with open(curves, "rb") as f:
        png = f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    if curves.is_symlink() or not png:
        what = "a link" if curves.is_symlink() else "not a PNG image"
        raise SwinzooError(f"{curves} is {what}, and would be uploaded as the run's training curves; remove it (or "
                           "put the run's own curves.png there) and push again")


def run_metrics(path: Path, provenance: dict) -> dict | None:
    """The metrics.json of the fine-tuning run that wrote these weights: given the run folder or its
    model.safetensors, and only when the figures are the ones the weights' provenance records (a converted or
    copied model in the folder was never scored by it)."""
    folder = path if path.is_dir() else path.parent
    file = folder / METRICS_FILE
    if not (path.is_dir() or path.name == "model.safetensors") or not file.exists():
        return None
    try:
        metrics = json.loads(read_small_text(file))
    except json.JSONDecodeError:
        raise SwinzooError(f"{file} is not valid JSON; fix or remove it") from None
    recorded = provenance.get("finetune")
    if not isinstance(metrics, dict) or not isinstance(recorded, dict):
        return None
    return metrics if all(recorded.get(k) == v for k, v in metrics.items()) else None


# ---------------------------------------------------------------------------------------------- folder
LOCAL_KEYS = ("loaded_from", "local_path")  # where a file lay on this machine: its user's folders and cache


def without_local_paths(provenance):
    """`provenance` for the Hub: the records of where files lay on this machine left out, at any depth."""
    if isinstance(provenance, dict):
        return {k: without_local_paths(v) for k, v in provenance.items() if k not in LOCAL_KEYS}
    if isinstance(provenance, list):
        return [without_local_paths(v) for v in provenance]
    return provenance


def write_push_folder(source: PushSource, repo_id: str, out_dir: Path, revision: str | None = None) -> None:
    """Fill `out_dir` with model.safetensors (timm layout), config.json, README.md and the run's curves.png."""
    extra = {"swinzoo": {"config": source.config.to_dict(), "provenance": without_local_paths(source.provenance),
                         "metrics": source.metrics}}
    write_timm_folder(source.state_dict, source.config, out_dir, extra_config=extra)
    # UTF-8 as the Hub reads it, whatever the locale; a path that is not UTF-8 (a surrogate) escaped
    (out_dir / "README.md").write_text(model_card(repo_id, source.config, source.provenance, source.metrics,
                                                  revision, curves=source.curves is not None),
                                       encoding="utf-8", errors="backslashreplace")
    if source.curves is not None:
        shutil.copyfile(source.curves, out_dir / CURVES_FILE)


def write_dry_run(src: str | object, repo_id: str, out: str | Path, trust_checkpoint: bool = False,
                  revision: str | None = None, **reading: Any) -> Path:
    """Write exactly the folder that would be uploaded to `out` (atomically) and upload nothing."""
    check_repo_id(repo_id)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SwinzooError(f"--dry-run {out} is a file; give a new folder to write the push preview into")
    if out.exists() and any(out.iterdir()):
        raise SwinzooError(f"{out} exists and is not empty; choose a new --dry-run folder")
    check_writable_folder(out)  # before the source is read, not as an OS error when the folder is written
    source = read_push_source(src, trust_checkpoint, **reading)
    with atomic_dir(out) as tmp:
        write_push_folder(source, repo_id, tmp, revision)
    return out


def login_command() -> str:
    """The login command of the installed huggingface_hub: `hf auth login` from 0.34, which added the `hf` command
    (1.0 removed `huggingface-cli`), `huggingface-cli login` before it."""
    import huggingface_hub

    try:
        major, minor = (int(part) for part in huggingface_hub.__version__.split(".")[:2])
    except ValueError:  # a development build's odd version: the current spelling
        return "hf auth login"
    return "hf auth login" if (major, minor) >= (0, 34) else "huggingface-cli login"


def check_push_access(repo_id: str) -> None:
    """Before a long run that ends with a push: a token exists, the Hub answers, and it accepts the token."""
    hub_timeout()
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not get_token():
        raise SwinzooError(f"--push-to needs a Hugging Face token: run `{login_command()}` or set HF_TOKEN")
    if offline():
        raise SwinzooError("--push-to needs the Hub, and HF_HUB_OFFLINE is set: unset it, or drop --push-to and "
                           "push the run later")
    try:
        with hub_calls():
            HfApi(endpoint=endpoint(), token=get_token()).whoami()
    except HubNetworkError as e:
        raise NetworkError(f"--push-to {repo_id}: {e}; or drop --push-to and push the run later") from None
    except (HfHubHTTPError, OSError) as e:  # whoami re-raises a refused token as the HTTP library's own error
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is None and not isinstance(e, HfHubHTTPError):
            raise
        if status in (401, 403):
            raise SwinzooError(f"--push-to {repo_id}: the Hugging Face Hub at {endpoint()} refused the token "
                               f"({status}); log in again (`{login_command()}`) or set HF_TOKEN") from None
        raise NetworkError(f"--push-to {repo_id}: the Hugging Face Hub at {endpoint()} answered {status}; try "
                           "again later, or drop --push-to and push the run later") from None


# top-level files of an earlier model the same commit removes: timm and transformers would load or read them instead
# of, or beside, the new model.safetensors and config.json (a card, notes, other files and subfolders stay)
STALE_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.safetensors.index.json", "*.bin.index.json",
                  "preprocessor_config.json")


def stale_files(repo_files: list[str], uploaded: set[str]) -> list[str]:
    """The files of `repo_files` a push of `uploaded` removes (`STALE_PATTERNS`, at the top level only)."""
    return sorted(f for f in repo_files if "/" not in f and f not in uploaded
                  and any(fnmatch.fnmatchcase(f, p) for p in STALE_PATTERNS))


@python_api()
def push(src: str | Path | Source, repo: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, overwrite_card: bool = False, dry_run: str | Path | None = None,
         trust_checkpoint: bool = False, from_format: str = "auto", arch: str | None = None, ema: bool | None = None,
         console: Console | None = None) -> str:
    """Upload `src` (a fine-tuning output folder, a model file, or a model in memory as `read_checkpoint` takes one,
    written in the dtype it holds, as timm's push_to_hub) to the Hub repo `repo` in one commit, which also
    removes an earlier model's weight files and preprocessor config (`STALE_PATTERNS`); returns the commit URL.
    `dry_run`: write the folder that would be uploaded there instead, upload nothing, return its path.
    `trust_checkpoint`, `from_format`, `arch`, `ema`: read `src` as `read_checkpoint` does. `console`: where to say
    which files the commit removed."""
    if revision is not None and (not revision.strip() or not revision.isprintable() or ".." in revision
                                 or any(c.isspace() for c in revision)):
        raise SwinzooError(f"--revision {revision!r} is not a branch name; use e.g. --revision v2")
    if dry_run is not None:
        return str(write_dry_run(src, repo, dry_run, trust_checkpoint, revision, from_format=from_format, arch=arch,
                                 ema=ema))
    repo_id = check_repo_id(repo)
    if offline():
        raise SwinzooError(f"pushing to {repo_id} needs the Hub, and HF_HUB_OFFLINE is set: unset it and push again "
                           "(or --dry-run DIR to see what would be uploaded)")
    hub_timeout()  # a bad SWINZOO_HUB_TIMEOUT fails before anything is read
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    source = read_push_source(src, trust_checkpoint, from_format=from_format, arch=arch, ema=ema)
    token = get_token()
    if not token:
        raise SwinzooError(f"no Hugging Face token: run `{login_command()}` or set HF_TOKEN, then push again")
    api = HfApi(endpoint=endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="swinzoo-push-") as tmp:
        folder = Path(tmp)
        write_push_folder(source, repo_id, folder, revision)
        try:
            with hub_calls():
                api.create_repo(repo_id, private=private, exist_ok=True)
                if private and not api.repo_info(repo_id).private:  # create_repo leaves an existing repo as it is
                    raise SwinzooError(f"{repo_id} exists and is public; --private cannot change that: make it "
                                       "private in its settings on the Hub, or push without --private")
                if revision and revision != "main":
                    api.create_branch(repo_id, branch=revision, exist_ok=True)
                if not overwrite_card and api.file_exists(repo_id, "README.md", revision=revision):
                    (folder / "README.md").unlink()  # keep the card already on the Hub
                uploaded = {p.name for p in folder.iterdir()}
                stale = stale_files(api.list_repo_files(repo_id, revision=revision), uploaded)
                # by name: huggingface_hub's patterns match in subfolders too ('*' spans '/')
                info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                         commit_message=commit_message or f"Add {source.config.img_size} px Swin model",
                                         delete_patterns=[glob.escape(f) for f in stale] or None)
        except HubNetworkError as e:
            raise NetworkError(f"push to {repo_id} failed: {e}") from None
        except HfHubHTTPError as e:
            response = e.response
            status = response.status_code if response is not None else "no"
            # requests' Response has .reason, httpx's (huggingface_hub >= 1.0) .reason_phrase
            reason = (getattr(response, "reason", None) or getattr(response, "reason_phrase", None)
                      if response is not None else None) or str(e).splitlines()[0]
            hint = " (check the token's write access to it)" if status in (401, 403) else ""
            error = NetworkError if isinstance(status, int) and status >= 500 else SwinzooError
            raise error(f"push to {repo_id} failed: the Hugging Face Hub at {endpoint()} answered {status} "
                               f"{reason}{hint}") from None
        except OSError as e:
            detail = (str(e).splitlines() or [type(e).__name__])[0][:120]
            raise NetworkError(f"push to {repo_id} failed: could not reach the Hugging Face Hub at {endpoint()} "
                               f"({detail})") from None
    if stale and console is not None:
        console.print(f"removed {', '.join(stale)} from {repo_id} (an earlier model's files)", soft_wrap=True,
                      markup=False)
    return str(info.commit_url if hasattr(info, "commit_url") else info)
