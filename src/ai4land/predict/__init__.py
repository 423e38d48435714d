"""The ``predict`` stage: one (scenario, year) map from the trained model.

- :mod:`~ai4land.predict.probabilities`: the window plan over a region and the model's
  class probabilities streamed band by band (inputs from the cube and the prior map);
- :mod:`~ai4land.predict.inference`: the model's forward passes over the windows
  (device, autocast, blending of overlapping windows);
- :mod:`~ai4land.predict.finalise`: the one finalising path shared by predict, evaluate and
  the emulator: harmonisation to the coarse target (:mod:`~ai4land.predict.harmonize`) and
  the uncertainty layers (:mod:`~ai4land.predict.layers`);
- :mod:`~ai4land.predict.run`: the job: threads, product writers, report.
"""
