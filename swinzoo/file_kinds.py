"""What a file given as weights is when it holds none, told from its first bytes (and a zip's listing), so that the
error names what the user has and what to do: a Git LFS pointer left by a `git clone` without git-lfs, the HTML page
of a Hub "blob" link, an archive to extract, a TorchScript program. The readers (`io.load_torch`,
`io.read_safetensors`) ask only once a file has failed to read as what its name says, or cannot be a checkpoint.
"""

from __future__ import annotations

import codecs
import io
import pickletools
import re
import zipfile
from pathlib import Path

GENERIC_FIX = "give a model file (.safetensors, .pth, .ckpt), a zoo name or hf-hub:ORG/NAME"
MISTAKEN = None  # the fix of a file given by mistake (an image, a text): the caller's own, else GENERIC_FIX
HEAD_BYTES = 512  # a tar header's magic sits at 257
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
EXTRACT = "extract it and give the checkpoint inside"
# (first bytes, what the file is, what to do); a gzip is usually a .tar.gz, which `tar xzf` opens too
MAGIC = (
    (b"\x89PNG", "a PNG image", MISTAKEN), (b"\xff\xd8\xff", "a JPEG image", MISTAKEN),
    (b"GIF8", "a GIF image", MISTAKEN), (b"RIFF", "a RIFF file (WebP, WAV, ...)", MISTAKEN),
    (b"%PDF", "a PDF", MISTAKEN),
    (b"\x1f\x8b", "a gzip archive", "decompress it (`tar xzf` for a .tar.gz, else `gunzip`) and give the checkpoint "
                                    "inside"),
    (b"\xfd7zXZ\x00", "an xz archive", EXTRACT), (b"BZh", "a bzip2 archive", EXTRACT),
    (b"\x28\xb5\x2f\xfd", "a zstd archive", EXTRACT), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", EXTRACT),
    (b"Rar!\x1a\x07", "a RAR archive", EXTRACT),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras / TensorFlow weights?)", "convert it to PyTorch weights first"),
    (b"\x93NUMPY", "a NumPy array", MISTAKEN),
)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")


def read_head(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD_BYTES)


def not_a_checkpoint(path: str | Path, head: bytes | None = None) -> tuple[str, str | None] | None:
    """(what the file is, what to do: None where it was given by mistake, and the caller's advice applies) for a
    file recognised as no checkpoint of any kind, or None: it may be one (a torch or safetensors file, damaged or
    not) or is something unknown."""
    head = read_head(path) if head is None else head
    if not head:
        return "it is empty", MISTAKEN
    if head[8:9] == b"{":  # a safetensors header: a damaged one is for its reader to describe
        return None
    if head.startswith(b"\x80"):
        return None if _torch_magic_first(head) else (
            "it is a Python pickle, not a torch.save file",
            "if it holds weights, load it where you trust it and save them with torch.save(state_dict, 'model.pth')")
    if head.startswith(LFS_POINTER):
        return lfs_pointer(Path(path), head)
    for magic, kind, fix in MAGIC:
        if head.startswith(magic):
            return f"it is {kind}", fix
    if head[257:262] == b"ustar":
        return "it is a tar archive", "extract it (`tar xf`) and give the checkpoint inside"
    if head.startswith(b"PK\x03\x04"):
        return zip_kind(path)
    # an ONNX ModelProto opens with its ir_version field (tag 0x08); the suffix keeps other protobufs out
    if head.startswith(b"\x08") and Path(path).suffix.lower() == ".onnx":
        return ("it is an ONNX graph, not weights", "run it with onnxruntime.InferenceSession(path), or give the "
                "weights it was exported from")
    text = _text(head)
    if text is None:
        return None
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered[:200]:
        return ("it is an HTML page, not the file: a web page saved in its place (on the Hugging Face Hub, a /blob/ "
                "link)", "download the file itself from its /resolve/ link (https://huggingface.co/ORG/NAME/resolve/"
                "main/FILE), or use `swinzoo download hf-hub:ORG/NAME`")
    return "it is a text file", MISTAKEN


def lfs_pointer(path: Path, head: bytes) -> tuple[str, str]:
    size = re.search(rb"\nsize (\d+)", head)
    of = f" to a {int(size.group(1)) / 1e6:,.1f} MB file" if size else ""
    what = (f"it is a Git LFS pointer{of}, not the file itself: the repository was cloned without git-lfs, which "
            "fetches the large files")
    repo = hub_clone_of(path)
    fetch = f"swinzoo download hf-hub:{repo}" if repo else "swinzoo download hf-hub:ORG/NAME"
    return what, f"run `git lfs install && git lfs pull` in the clone, or use `{fetch}`"


HUB_REMOTE = re.compile(r"^\s*url\s*=\s*(?:https?://|git@)(?:[\w.-]+@)?(?:www\.)?(?:huggingface|hf)\.co[/:]"
                        r"(?!datasets/|spaces/)(?:models/)?([\w.-]+/[\w.-]+?)(?:\.git)?/?\s*$", re.MULTILINE)


def hub_clone_of(path: Path) -> str | None:
    """ORG/NAME of the Hugging Face Hub model repo whose git clone holds `path`, or None."""
    for folder in list(path.resolve().parents)[:8]:
        if not (folder / ".git").exists():
            continue
        try:  # the nearest clone only (a `.git` file, a worktree's, has no config of its own: no name)
            found = HUB_REMOTE.search((folder / ".git" / "config").read_text(errors="replace")[:65536])
        except OSError:
            return None
        return found.group(1) if found else None
    return None


def zip_kind(path: str | Path) -> tuple[str, str] | None:
    """What a zip that is no torch.save file is; None for a torch.save archive, or one that does not open (cut)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    records = {name.split("/", 1)[1] for name in names if name.count("/") >= 1}
    if "data.pkl" in records and ("constants.pkl" in records or any(r.startswith("code/") for r in records)):
        return ("it is a TorchScript program (torch.jit.save), not a checkpoint",
                "give the weights it was scripted from, or save its weights with torch.save(torch.jit.load(PATH)"
                ".state_dict(), 'model.pth')")
    if "data.pkl" in records:
        return None
    if names and all(name.endswith(".npy") for name in names):
        return "it is a NumPy .npz archive", MISTAKEN
    files = [n for n in names if not n.endswith("/")]
    shown = [n for n in files if n.lower().endswith(CHECKPOINT_SUFFIXES)] or files  # the checkpoints, first
    listed = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "") if shown else "nothing"
    return f"it is a zip archive holding {listed}, not a torch.save file", "unzip it and give the checkpoint inside"


TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's format before 1.6: torch.serialization's


def _torch_magic_first(head: bytes) -> bool:
    """Whether a pickle's first object is torch's magic number, read by opcode: nothing of it is run."""
    try:
        return any(arg == TORCH_MAGIC for _, arg, _ in pickletools.genops(io.BytesIO(head)))
    except Exception:  # genops fails on bytes that are no pickle, or one longer than `head`: not torch's
        return False


def _text(head: bytes) -> str | None:
    try:  # incremental: the first bytes may end inside a character
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
