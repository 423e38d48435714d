"""The ``train`` stage: the training loop (:mod:`~ai4land.train.loop`), run as one process or
under ``torchrun`` (:mod:`~ai4land.train.launch` starts it and ties it to its parent)."""
