"""Fine-tuning SAM-family models and training from-scratch baselines (``medsamkit fit``).

:mod:`.config` (layered YAML + overrides) -> :mod:`.fit` builds the net (:mod:`.nets`: modes,
:mod:`.lora`), the data (:mod:`.datamodule`, :mod:`.datasets`, :mod:`.augment`,
:mod:`.embedding_cache`), the LightningModule (:mod:`.module`, :mod:`.losses`) and the Trainer,
then exports (:mod:`.export`). Prompt-free inference for automatic mode is
:mod:`medsamkit.inference.automatic`.
Importing this package loads nothing heavy; Lightning is imported by the modules that need it.
"""
