"""torch side of proof of logits: model loading, generation with fingerprints, validation
(its benchmarks are in :mod:`ambient_p2p.bench`). Its modules import torch (the ``model``
extra); the sans-IO rules live in :mod:`ambient_p2p.core.pol`, which does not."""
