"""Hugging Face Hub sources: `hf-hub:ORG/NAME[@REVISION]`, and zoo names whose weights live on the Hub.

Downloads go through huggingface_hub into its own cache, so a repo is fetched once and shared with timm and
transformers. The environment is read at call time: `HF_HOME` / `HF_HUB_CACHE` (where the cache is),
`HF_HUB_OFFLINE` (use the cache only), `HF_ENDPOINT` (the Hub's URL) and `HF_TOKEN` (private or gated repos, read
by huggingface_hub itself). Only config.json and the weights are fetched, looked for as transformers'
from_pretrained does (`WEIGHT_CHOICES`): model.safetensors, else the index of its shards
(model.safetensors.index.json, as `push_to_hub(max_shard_size=...)` uploads) and every shard it names (each a
plain file name, never a path), else pytorch_model.bin, else its shards; all at config.json's commit.
Every call to the Hub runs inside `swinzoo.hub_http.hub_calls()` (timeouts, no retries on an unreachable Hub, quiet).
"""

from __future__ import annotations

import re
from pathlib import Path

from swinzoo.errors import NetworkError, SwinzooError, python_api
from swinzoo.hub_http import (
    HubNetworkError,
    cache_dir,
    endpoint,
    http_error,
    hub_calls,
    hub_timeout,
    offline,
    refused,
)
from swinzoo.weight_files import SHARD_INDEXES, WEIGHT_CHOICES, weight_map
from swinzoo.zoo import get_entry

PREFIXES = ("hf-hub:", "hf_hub:")  # timm accepts the legacy underscore spelling too
WEIGHT_FILES = (WEIGHT_CHOICES[0], WEIGHT_CHOICES[2])  # the single files
MAX_INDEX_BYTES = 64 * 2**20  # far above any real index (a 100-billion-parameter model's: a few MiB)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
REPO_ID_MAX = 96  # the Hub's limit on a repo id


def is_hub_ref(src: str) -> bool:
    return src.startswith(PREFIXES)


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a valid Hub repo id ORG/NAME, or None when it is."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        return "it needs exactly one '/' between a non-empty ORG and NAME"
    if not REPO_ID.match(repo_id):
        return "ORG and NAME may only hold letters, digits, '-', '_' and '.', and start with a letter or digit"
    if "--" in repo_id or ".." in repo_id:
        return "'--' and '..' are not allowed"
    if repo_id.endswith((".git", "-", ".")):
        return "it may not end with '.git', '-' or '.'"
    if len(repo_id) > REPO_ID_MAX:
        return f"it is longer than {REPO_ID_MAX} characters"
    return None


def check_repo_id(repo_id: str) -> str:
    """`repo_id` itself when it is a valid Hub repo id, else a `SwinzooError` naming the problem."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise SwinzooError(f"repo id {repo_id!r} is not ORG/NAME: {problem}; use e.g. --repo my-org/swin-b-384-pets")
    return repo_id


def parse_ref(src: str) -> tuple[str, str | None]:
    """`hf-hub:org/name@rev` -> ("org/name", "rev")."""
    body = src.split(":", 1)[1]
    repo, at, revision = body.partition("@")
    problem = repo_id_problem(repo)
    if problem is None and at:
        if not revision:
            problem = "nothing follows '@'; give a branch, tag or commit, or drop the '@'"
        elif not revision.isprintable() or any(c.isspace() for c in revision) or ".." in revision:
            problem = f"revision {revision!r} holds spaces, control characters or '..'"
    if problem:
        raise SwinzooError(f"{src!r} is not a Hub reference ({problem}); write hf-hub:ORG/NAME or "
                           "hf-hub:ORG/NAME@REVISION")
    return repo, revision or None


# ---------------------------------------------------------------------------------------------- environment


def _download(repo: str, filename: str, revision: str | None, local_only: bool, commit: str | None = None
              ) -> Path | None:
    """The cached path of one file, downloading it unless offline; None when the repo has no such file. A Hub that
    cannot be reached raises `HubNetworkError` (the caller looks in the cache). `commit`: fetch it at that commit
    instead of `revision` (which the messages still name)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = f"hf-hub:{repo}" + (f"@{revision}" if revision else "")
    try:
        with hub_calls():
            return Path(hf_hub_download(repo, filename, revision=commit or revision, cache_dir=cache_dir(),
                                        local_files_only=local_only, endpoint=endpoint(),
                                        etag_timeout=hub_timeout()))
    except LocalEntryNotFoundError as e:  # (an EntryNotFoundError, so first)
        answer = None if local_only else http_error(e)  # online: the Hub's answer made it look in the cache
        if answer and 400 <= answer[0] < 500 and answer[0] not in (408, 429):
            raise refused(ref, *answer) from None
        raise  # the caller decides: a missing optional file, or the repo is not cached at all
    except HubNetworkError:
        raise  # the caller looks in the cache
    except EntryNotFoundError:
        return None
    except GatedRepoError:
        raise SwinzooError(f"{ref} is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise SwinzooError(f"{ref}: revision {revision!r} does not exist; check the branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise SwinzooError(f"{ref} does not exist or is private; check the name, or set HF_TOKEN for a private "
                           "repo") from None
    except HfHubHTTPError as e:
        status, phrase = http_error(e) or (0, str(e).splitlines()[0][:120] if str(e).strip() else type(e).__name__)
        raise refused(ref, status, phrase) from None
    except OSError as e:  # network errors are OSErrors in requests/httpx; also a full or read-only cache
        detail = str(e).splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise NetworkError(f"could not download {ref} ({type(e).__name__}: {detail}); check the network and the "
                           f"cache folder {cache_dir()}") from None


@python_api()
def download(ref: str) -> Path:
    """`swinzoo download`: a zoo name's or `hf-hub:ORG/NAME[@REV]`'s config and weights into the Hugging Face
    cache (downloaded unless already there); returns their folder (the file itself for weights shipped inside
    swinzoo)."""
    if not is_hub_ref(ref):
        entry, tag = get_entry(ref)  # unknown names fail here, with the closest names
        shipped = entry.weights_for(tag).package_path()
        if shipped is not None:  # the nano models ship inside swinzoo: nothing to fetch
            return shipped
        ref = zoo_repo(ref)
    return fetch(ref, downloading=True)


class _Fetch:
    """The files of one `fetch`, each from the Hub or, once the Hub failed to answer (or offline), from the cache."""

    def __init__(self, src: str, downloading: bool) -> None:
        self.src, self.downloading = src, downloading
        self.repo, self.revision = parse_ref(src)
        self.local_only = offline()
        self.missing_locally = False
        self.network: HubNetworkError | str | None = None
        self.busy = False  # the Hub answered 429 or 5xx: the network is fine, the Hub is not (now)

    def get(self, name: str, commit: str | None = None) -> Path | None:
        """The cached path of `name`, or None: the Hub has no such file, or (`missing_locally`) the cache has not."""
        from huggingface_hub.errors import LocalEntryNotFoundError

        self.missing_locally = False
        try:
            try:
                return _download(self.repo, name, self.revision, self.local_only, commit)
            except HubNetworkError as e:
                # the Hub did not answer: use the cache for this and the other files instead of retrying
                self.network, self.local_only = e, True
                return _download(self.repo, name, self.revision, True, commit)
        except LocalEntryNotFoundError as e:
            # online, this means the Hub did not answer: use the cache for the other files instead of retrying
            answer = None if self.local_only else http_error(e)
            self.busy = self.busy or bool(answer and (answer[0] == 429 or answer[0] >= 500))
            self.network = self.network or (f"the Hugging Face Hub at {endpoint()} answered {answer[0]} "
                                            f"{answer[1]}".rstrip() if answer else None)
            self.missing_locally = self.local_only = True
            return None

    def not_cached(self, what: str) -> SwinzooError:
        """`what` (the repo, or one of its files) is needed, not in the cache, and the Hub did not give it."""
        src, network = self.src, self.network
        where = f"{what} is not in the Hugging Face cache ({cache_dir()})"
        if isinstance(network, HubNetworkError) and not offline():
            return NetworkError(f"{src}: {network.what()} and {where}; {network.hint()}, or set HF_HOME to a cache "
                                "that has it")
        if offline():
            how = "HF_HUB_OFFLINE is set"
        elif network is not None:
            how = f"{network} (HF_HUB_OFFLINE=1 skips the Hub)"
        else:
            how = "the Hub could not be reached (set HF_HUB_OFFLINE=1 to skip trying)"
        if self.busy and not offline():
            fix = "try again later" + ("" if self.downloading else f" (`swinzoo download {src}`)")
        elif self.downloading:  # the user is already running `swinzoo download`: say what else to change
            fix = "unset HF_HUB_OFFLINE to download it" if offline() else "run it again with network access"
        else:
            fix = (("unset HF_HUB_OFFLINE and " if offline() else "")
                   + f"run `swinzoo download {src}` with network access")
        error = NetworkError if network is not None and not offline() else SwinzooError
        return error(f"{src}: {where} and {how}; {fix}, or set HF_HOME to a cache that has it")


def fetch(src: str, downloading: bool = False) -> Path:
    """Download (or find in the cache) config.json and the weights of `hf-hub:ORG/NAME[@REV]`; their folder. The
    weights as transformers' from_pretrained looks for them (`WEIGHT_CHOICES`), a sharded model's index then each
    shard it names; every file at config.json's commit, so a push landing meanwhile mixes nothing."""
    files = _Fetch(src, downloading)
    hub_timeout()  # a bad SWINZOO_HUB_TIMEOUT fails before anything else
    # every file at config.json's commit, whatever its branch does meanwhile: the folder read holds them all
    commit = snapshot_commit(files.get("config.json"))
    uncached = files.missing_locally  # a file the cache lacks, which the Hub did not give either
    for name in WEIGHT_CHOICES:
        weights = files.get(name, commit)
        uncached = uncached or files.missing_locally
        if weights is not None:
            break
    else:
        if uncached:
            raise files.not_cached(files.repo)
        raise SwinzooError(f"{src}: {files.repo} has no {' or '.join(WEIGHT_FILES)} (nor a sharded model's "
                           f"{SHARD_INDEXES[0]}); it is not a timm or transformers model repo")
    if weights.name in SHARD_INDEXES:
        for shard in shard_names(weights, src):
            if files.get(shard, snapshot_commit(weights)) is None:
                if files.missing_locally:
                    raise files.not_cached(f"{files.repo}'s shard {shard}")
                raise SwinzooError(f"{src}: shard {shard} is missing from {files.repo}, whose {weights.name} names "
                                   "it; the upload is incomplete: ask its owner to push the model again, or give "
                                   "another revision")
    return weights.parent


def snapshot_commit(path: Path | None) -> str | None:
    """The commit of a file in the cache's snapshots/COMMIT/ folder (None: no file)."""
    return path.parent.name if path is not None and path.parent.parent.name == "snapshots" else None


def shard_names(index: Path, src: str) -> list[str]:
    """The shard files a sharded model's index names, each once. The index is someone else's upload: each shard
    must be a plain file name beside it (as transformers writes), never a path to follow."""
    text = index.read_bytes() if index.stat().st_size <= MAX_INDEX_BYTES else b""
    return list(dict.fromkeys(weight_map(text, f"{src}: its {index.name}", "nothing was fetched from it; ask the "
                                         "repo's owner to push the model again").values()))


def in_cache(repo: str) -> bool:
    """Whether `fetch` finds everything it needs of `repo` (at main) in the Hugging Face cache, so loading or
    downloading it needs no network: config.json and a weight file (a sharded model: its index and every shard).
    Reads the cache folder only (works with HF_HUB_OFFLINE)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str, at: str | None = None) -> Path | None:
        # a path when the file is there; None, or a marker that the Hub has no such file, otherwise
        path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir(), revision=at)
        return Path(path) if isinstance(path, str) else None

    if cached("config.json") is None:
        return False
    for name in WEIGHT_CHOICES:
        weights = cached(name)
        if weights is not None and name in SHARD_INDEXES:
            try:
                shards = shard_names(weights, f"hf-hub:{repo}")
                return all(cached(shard, snapshot_commit(weights)) for shard in shards)
            except SwinzooError:
                return False
        if weights is not None:
            return True
    return False


def zoo_repo(name: str) -> str:
    """The `hf-hub:` reference of a zoo name's weights (`swin_b_224` -> hf-hub:timm/swin_base_...)."""
    entry, tag = get_entry(name)
    w = entry.weights_for(tag)
    if not w.hub_repo:
        raise SwinzooError(f"{name}'s weights are only released as {w.official_url or 'package data'}; download "
                           "that file and give its path")
    return f"hf-hub:{w.hub_repo}"
