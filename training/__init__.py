"""Offline training of the encoders embedserve serves (torch lives here, never in ``embedserve/``).

Parts: ``data`` (datasets, rendering as the server does) → ``augment`` (tensor
views) → ``backbones`` + ``heads`` → ``methods`` (SimCLR, BYOL, DINO, MAE, VAE;
each states its loss, from ``losses``) → ``loop`` (the method-agnostic trainer,
with ``schedule``, ``optim``, ``distributed``, ``run`` for checkpoints) →
``evaluate`` (k-NN, linear probe) → ``export`` (ONNX bundles). ``cli`` ties them
together as ``embedserve-train fit | eval | export``.
"""
