"""torch side of proof of logits: model loading, generation with fingerprints, validation.
Importing this package imports torch; the sans-IO rules live in :mod:`ambient_p2p.core.pol`."""
