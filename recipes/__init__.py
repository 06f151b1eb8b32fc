"""swinzoo's fine-tuning recipes (YAML), shipped as package data; read them with `swinzoo.train.recipes`."""
