"""Evaluation: weighted k-NN with few labels, linear probe, bundle-as-served embeddings."""

from training.evaluate.knn import draw_labelled, knn_predict, knn_table
from training.evaluate.probe import linear_probe

__all__ = ["draw_labelled", "knn_predict", "knn_table", "linear_probe"]
