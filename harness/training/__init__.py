"""Training one model: the trainer (:mod:`~harness.training.train`), its step
(:mod:`~harness.training.step`), the evaluation of the trained model
(:mod:`~harness.training.evaluation`), its checkpoints (:mod:`~harness.training.checkpoint`),
the stopwatch of its timings (:mod:`~harness.training.stopwatch`) and its progress lines
(:mod:`~harness.training.progress`).
Model-agnostic: nothing here imports the encodings, the models or the study."""
