"""Few-label labelling over a collection's vectors: which items to label next, label propagation,
label audit. Pure numpy / scipy / FAISS over arrays; the store and the server call it.

Modules: ``job`` (progress, deadlines, cancellation of long work), ``neighbours`` (k nearest
neighbours by FAISS, exact or over an IVF index built for the job; the k-NN graph),
``propagate`` (weighted k-NN and label spreading), ``suggest`` (typical, uncertain, random),
``audit`` (leave-one-out disagreement), ``labeller`` (jobs over a collection, in ids and label
names, with each collection's k-NN graph kept while its vectors stay the same).
"""

from embedserve.labelling.audit import Finding, audit
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import KnnGraph, knn_graph, nearest_rows
from embedserve.labelling.propagate import Propagation, knn_propagate, spread, spread_propagate
from embedserve.labelling.suggest import STRATEGIES, Suggestion, suggest

__all__ = [
    "STRATEGIES",
    "Job",
    "KnnGraph",
    "Propagation",
    "Suggestion",
    "Finding",
    "audit",
    "knn_graph",
    "knn_propagate",
    "nearest_rows",
    "spread",
    "spread_propagate",
    "suggest",
]
