"""What `finetune` and `pretrain` take from Python: os.PathLike paths (recorded as str), model objects refused in
one line, and values of the wrong type named as they were given."""


import pytest

import swinzoo
from swinzoo.errors import SwinzooError

RUN = {"max_steps": 1, "batch_size": 4, "num_workers": 0, "accelerator": "cpu", "devices": 1,
       "trainer": {"limit_val_batches": 1, "enable_model_summary": False}}


@pytest.mark.parametrize("verb, model", [
    ("finetune", lambda: swinzoo.create_model("swin_n_64")),
    ("pretrain", lambda: swinzoo.load_simmim("swin_n_64")),
    ("pretrain", lambda: swinzoo.create_model("swin_n_64", features_only=True)),
])
def test_a_model_object_as_the_source_is_one_line(verb, model, tmp_path):
    with pytest.raises(SwinzooError, match=rf"{verb}\(\): the source is a \w+ object; .*swinzoo.save_model") as e:
        getattr(swinzoo, verb)(model(), data="shapes", out=str(tmp_path / "o"), **RUN)
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()
