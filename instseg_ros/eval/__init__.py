"""Evaluation: COCO / occlusion / unseen-object metrics (:mod:`.coco`) and the per-model evaluators."""
