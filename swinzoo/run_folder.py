"""The names of the files in a run folder (the OUT of `swinzoo finetune` and `swinzoo pretrain`), in one place
every layer can read: the training writes them; the converters, `push` and `eval` recognise a run by them."""

RUN_FILE = "run.json"  # the plan (source, data, recipe, provenance), read back strictly on --resume
CONFIG_FILE = "config.yaml"  # the run as `swinzoo finetune --config` reads it (replays the run)
CKPT_FILE = "last.ckpt"
BEST_FILE = "best.ckpt"  # weights only: the best validated step, when --keep best
METRICS_FILE = "metrics.json"  # written last, when a run has finished: its presence marks a finished run
CURVES_FILE = "curves.png"  # training loss, validation figures and learning rate against the step
PRETRAIN_TASK = "simmim_pretrain"  # run.json provenance["task"] of a pretraining run (the verb that resumes it)
