"""Model: the bone-age estimate and its explanation, from a film (or its SAM crop) and the patient's sex.

* ``transforms``: film -> network input, the same function for training and inference, and the
  test-time views (inputs ``(N, 1, S, S) float32``, ImageNet grey mean/std);
* ``net``: ``BoneAgeNet`` (EfficientNet-Lite + sex -> months) and ``EnsembleNet`` (their weighted mean);
* ``checkpoint``: self-describing checkpoints, plain ``torch.save`` dicts of metadata and a state_dict
  (no pickled classes), checked on load;
* ``predictor``: :class:`~boneage_core.model.predictor.BoneAgePredictor`, numpy in, months out, with the
  provenance and the +/- range of every estimate; ``explain``: its Grad-CAM++ heatmap;
* ``ensemble``: members of trained checkpoints, their estimates on labelled films, their weights;
* ``localizer``: the hand localizer distilled from SAM, and the hand and carpal crops it makes;
* ``views``: what each member reads (the film, the hand crop, the carpal square) and where it lies.

May import: ``boneage_core.errors``, ``boneage_core.settings``, ``boneage_core.films``,
``boneage_core.clinical``, ``boneage_core.segment`` (a ``sam-crop`` model reads the SAM crop).
"""
