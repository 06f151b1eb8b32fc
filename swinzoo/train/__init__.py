"""Fine-tuning: LightningModule (`module`), data (`data`, `shapes`), recipes (`recipes`), optimizer (`optim`), runs."""
