"""Hugging Face Hub sources: `hf-hub:ORG/NAME[@REVISION]`, and zoo names whose weights live on the Hub.

Downloads go through huggingface_hub into its own cache, so a repo is fetched once and shared with timm and
transformers. The environment is read at call time: `HF_HOME` / `HF_HUB_CACHE` (where the cache is),
`HF_HUB_OFFLINE` (use the cache only) and `HF_TOKEN` (private or gated repos, read by huggingface_hub itself).
Only config.json and one weight file are fetched (model.safetensors, else pytorch_model.bin).
"""

from __future__ import annotations

import os
from pathlib import Path

from swinzoo.errors import SwinzooError
from swinzoo.zoo import get_entry

PREFIXES = ("hf-hub:", "hf_hub:")  # timm accepts the legacy underscore spelling too
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hub_ref(src: str) -> bool:
    return src.startswith(PREFIXES)


def parse_ref(src: str) -> tuple[str, str | None]:
    """`hf-hub:org/name@rev` -> ("org/name", "rev")."""
    body = src.split(":", 1)[1]
    repo, _, revision = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise SwinzooError(f"{src!r} is not a Hub reference; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo, revision or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_dir() -> Path:
    """huggingface_hub's cache folder for the current environment (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _download(repo: str, filename: str, revision: str | None, local_only: bool) -> Path | None:
    """The cached path of one file, downloading it unless offline; None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = f"hf-hub:{repo}" + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir(),
                                    local_files_only=local_only))
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError, so first)
        raise  # the caller decides: a missing optional file, or the repo is not cached at all
    except EntryNotFoundError:
        return None
    except GatedRepoError:
        raise SwinzooError(f"{ref} is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise SwinzooError(f"{ref}: revision {revision!r} does not exist; check the branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise SwinzooError(f"{ref} does not exist or is private; check the name, or set HF_TOKEN for a private "
                           "repo") from None
    except OSError as e:  # network errors are OSErrors in requests/httpx
        raise SwinzooError(f"could not download {ref} ({type(e).__name__}); check the network") from None


def download(ref: str) -> Path:
    """`swinzoo download`: a zoo name's or `hf-hub:ORG/NAME[@REV]`'s config and weights into the Hugging Face
    cache (downloaded unless already there); returns their folder."""
    if not is_hub_ref(ref):
        get_entry(ref)  # unknown names fail here, with the closest names
        ref = zoo_repo(ref)
    return fetch(ref)


def fetch(src: str) -> Path:
    """Download (or find in the cache) config.json and the weights of `hf-hub:ORG/NAME[@REV]`; their folder."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, revision = parse_ref(src)
    found: list[Path] = []
    missing_locally = False
    local_only = offline()
    for name in ("config.json", *WEIGHT_FILES):
        if name in WEIGHT_FILES and any(p.name in WEIGHT_FILES for p in found):
            break
        try:
            path = _download(repo, name, revision, local_only)
        except LocalEntryNotFoundError:
            # online, this means the Hub did not answer: use the cache for the other files instead of retrying
            missing_locally = local_only = True
            continue
        if path is not None:
            found.append(path)
    if not any(p.name in WEIGHT_FILES for p in found):
        if missing_locally:
            how = ("HF_HUB_OFFLINE is set" if offline() else "the Hub could not be reached (set HF_HUB_OFFLINE=1 to "
                   "skip trying)")
            raise SwinzooError(f"{src}: {repo} is not in the Hugging Face cache ({cache_dir()}) and {how}; run "
                               f"`swinzoo download {src}` with network access, or set HF_HOME to a cache that has it")
        raise SwinzooError(f"{src}: {repo} has no {' or '.join(WEIGHT_FILES)}; it is not a timm or transformers "
                           "model repo")
    return found[-1].parent


def zoo_repo(name: str) -> str:
    """The `hf-hub:` reference of a zoo name's weights (`swin_b_224` -> hf-hub:timm/swin_base_...)."""
    entry, tag = get_entry(name)
    w = entry.weights_for(tag)
    if not w.hub_repo:
        raise SwinzooError(f"{name}'s weights are only released as {w.official_url or 'package data'}; download "
                           "that file and give its path")
    return f"hf-hub:{w.hub_repo}"
