"""The model card of a pushed model (its README.md): what it is, where its weights came from and how they scored,
with the front matter the Hub reads (`card_data`). The provenance shown may come from someone else's file: its text
is shown, never read as Markdown or HTML."""

from __future__ import annotations

import re

from swinzoo.config import SwinConfig
from swinzoo.errors import printable
from swinzoo.models import count_macs, count_params
from swinzoo.preprocess import Preprocess
from swinzoo.zoo import get_entry, is_zoo_name

# The provenance in a card may come from someone else's file: its text is shown, never read as Markdown or HTML
MARKDOWN_INLINE = re.compile(r"([\\`*\[\]<>|])")


def code(text) -> str:
    """`text` as one inline code span: newlines and other controls as escapes, fenced by more backticks than it
    holds in a row (CommonMark), so it cannot end the span."""
    text = printable(str(text))
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text) -> str:
    """`text` as one line of Markdown text: no link, image, HTML, code span or table cell of its own."""
    return MARKDOWN_INLINE.sub(r"\\\1", printable(str(text)))


def base_model(provenance: dict) -> str | None:
    """The Hub repo the weights came from, when known (a hf-hub: source or a zoo name)."""
    for key in ("hub_repo", "source", "from"):
        value = str(provenance.get(key) or "")
        if value.startswith("hf-hub:"):
            return value[len("hf-hub:"):].split("@")[0]
        if value and is_zoo_name(value):
            entry, tag = get_entry(value)
            return entry.weights_for(tag).hub_repo if entry.weights else None
    return None


CITATIONS = {
    1: """@inproceedings{liu2021Swin,
  title={Swin Transformer: Hierarchical Vision Transformer using Shifted Windows},
  author={Liu, Ze and Lin, Yutong and Cao, Yue and Hu, Han and Wei, Yixuan and Zhang, Zheng and Lin, Stephen and
          Guo, Baining},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year={2021}
}""",
    2: """@inproceedings{liu2021swinv2,
  title={Swin Transformer V2: Scaling Up Capacity and Resolution},
  author={Liu, Ze and Hu, Han and Lin, Yutong and Yao, Zhuliang and Xie, Zhenda and Wei, Yixuan and Ning, Jia and
          Cao, Yue and Zhang, Zheng and Dong, Li and Wei, Furu and Guo, Baining},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}""",
}


def trained_on(provenance: dict) -> str | None:
    """The `--data` the weights were trained on, as given (a folder, `hf:ORG/NAME` or `shapes`), when recorded."""
    data = provenance.get("dataset") or provenance.get("data")
    return data if isinstance(data, str) else None


def hub_dataset(provenance: dict) -> str | None:
    """The Hub dataset id the model was trained on (`--data hf:ORG/NAME[:CONFIG]`), or None for local or built-in
    data (a folder, also one given as `hf:PATH`)."""
    data = trained_on(provenance)
    if not data or not data.startswith("hf:"):
        return None
    name = data[len("hf:"):].split(":")[0]  # a Hub id holds no colon: what follows one is the config
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and not name.startswith(".") else None


def card_data(repo_id: str, cfg: SwinConfig, provenance: dict, metrics: dict | None):
    """The card's metadata through huggingface_hub's `ModelCardData` (eval results become the model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset_id = hub_dataset(provenance)
    data = trained_on(provenance)
    results = []
    for key, metric, label in (("top1", "accuracy", "top-1 accuracy"), ("top5", "top_5_accuracy", "top-5 accuracy")):
        if metrics and key in metrics:
            results.append(EvalResult(task_type="image-classification", dataset_type=dataset_id or "custom",
                                      dataset_name=str(dataset_id or data or "validation set"), dataset_split="val",
                                      metric_type=metric, metric_name=label,
                                      metric_value=round(float(metrics[key]), 4)))
    return ModelCardData(library_name="timm", pipeline_tag="image-classification", license="mit",
                         tags=["image-classification", "timm", "swinzoo", f"swin-transformer-v{cfg.version}"],
                         base_model=base_model(provenance), datasets=[dataset_id] if dataset_id else None,
                         model_name=repo_id.split("/")[1], eval_results=results or None)


def model_card(repo_id: str, cfg: SwinConfig, provenance: dict, metrics: dict | None,
               revision: str | None = None, curves: bool = False) -> str:
    """README.md: metadata for the Hub, then how the model was made, its size and how to load it (from `revision`
    when it is not main: a new repo's main is empty)."""
    name = repo_id.split("/")[1]
    ref = f"{repo_id}@{revision}" if revision and revision != "main" else repo_id
    dataset = trained_on(provenance)
    base = base_model(provenance)
    header = ["---", card_data(repo_id, cfg, provenance, metrics).to_yaml().strip(), "---"]
    made = [f"- architecture: Swin Transformer V{cfg.version}, embed dim {cfg.embed_dim}, depths "
            f"{list(cfg.depths)}, heads {list(cfg.num_heads)}, {cfg.num_classes} classes",
            f"- resolution {cfg.img_size} px, window {cfg.window_size}"
            + (f", pretrained windows {list(cfg.pretrained_window_sizes)}" if cfg.version == 2 else ""),
            f"- {count_params(cfg) / 1e6:.2f} M parameters, {count_macs(cfg) / 1e9:.3f} GMACs at {cfg.img_size} px"]
    if provenance.get("source"):
        made.append(f"- source: {code(provenance['source'])}" + (f" (Hub: {code(base)})" if base else ""))
    transfer = provenance.get("transfer")
    if transfer:
        src = transfer.get("from", {})
        done = [f"{len(transfer[key])} tensors {what}" for key, what in (
            ("interpolated", "interpolated (bicubic)"), ("reinitialized", "re-initialised"), ("mapped", "mapped"))
            if transfer.get(key)] + [plain(note) for note in transfer.get("notes", [])]
        moved = (src.get("img_size"), src.get("window_size")) != (cfg.img_size, cfg.window_size)
        if moved or done:
            made.append(f"- transferred from {plain(src.get('img_size'))} px / window {plain(src.get('window_size'))}"
                        + (": " + "; ".join(done) if done else ""))
    if provenance.get("recipe"):
        recipe = provenance["recipe"]
        made.append(f"- recipe: {code(recipe.get('name', 'custom') if isinstance(recipe, dict) else recipe)}"
                    + (" (the training of the weights before the transfer above)" if "before_transfer" in provenance
                       else ""))
    if isinstance(provenance.get("finetune"), dict) and provenance["finetune"].get("command"):
        made.append(f"- command: {code(provenance['finetune']['command'])}")
    if dataset:
        made.append(f"- data: {code(dataset)}")
    held = provenance.get("in_memory")
    if isinstance(held, dict):  # pushed from an object: what it was loaded from is not all that it is
        made.append(f"- weights: those an in-memory {code(held.get('object'))} held ({plain(held.get('dtype'))}), "
                    "maybe trained or edited since it was made as above")
    body = [f"# {name}", "", "Made with [swinzoo](https://pypi.org/project/swinzoo/).", "", "## How it was made", "",
            *made, ""]
    if metrics:
        body += ["## Results", "", "| metric | value |", "|---|---:|"]
        body += [f"| {plain(k)} | {v:.4f} |" if isinstance(v, float) else f"| {plain(k)} | {plain(v)} |"
                 for k, v in metrics.items()]
        body.append("")
    if curves:
        body += ["![training curves](curves.png)", ""]
    body += ["## How to use", "", "swinzoo:", "", "```python", "import swinzoo", "",
             f'model = swinzoo.load_model("hf-hub:{ref}")', "```", "", "timm:", "", "```python", "import timm", "",
             f'model = timm.create_model("hf-hub:{ref}", pretrained=True)', "```", "",
             f"Preprocessing ({cfg.img_size} px input; `pretrained_cfg` in config.json, `swinzoo.data_config`): "
             f"{Preprocess.of(cfg).describe(cfg.img_size)}.", "", "## Citation", "", "```bibtex", CITATIONS[1],
             *([CITATIONS[2]] if cfg.version == 2 else []), "```", ""]
    return "\n".join(header) + "\n\n" + "\n".join(body)


