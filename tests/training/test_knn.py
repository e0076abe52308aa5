pytest = __import__("pytest")
pytest.importorskip("torch")

import numpy as np  # noqa: E402

from training.evaluate.knn import draw_labelled, knn_predict, knn_table  # noqa: E402


def test_weighted_vote_on_a_constructed_case():
    # Query at angle 0. Class 0 has one neighbour at cos 0.9; class 1 has two at cos 0.8.
    # exp(0.9/0.07) = e^12.857 > 2 * e^11.429 (= e^12.122): the single closer neighbour wins.
    def at(cos):
        return [cos, np.sqrt(1 - cos**2)]

    support = np.array([at(0.9), at(0.8), at(0.8)])
    labels = np.array([0, 1, 1])
    assert knn_predict(support, labels, np.array([[1.0, 0.0]]), 2, k=3, temperature=0.07).tolist() == [0]
    # With a high temperature the weights flatten and the majority wins.
    assert knn_predict(support, labels, np.array([[1.0, 0.0]]), 2, k=3, temperature=10.0).tolist() == [1]
    # k = 1 keeps only the nearest.
    assert knn_predict(support, labels, np.array([[0.8, 0.6]]), 2, k=1).tolist() == [1]


def test_knn_table_on_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    train_labels = np.repeat(np.arange(4), 12)
    test_labels = np.repeat(np.arange(4), 5)
    train = centres[train_labels] + rng.normal(size=(48, 4))
    test = centres[test_labels] + rng.normal(size=(20, 4))
    table = knn_table(train, train_labels, test, test_labels, shots=(1, 5, None))
    assert table == {k: {"mean": 100.0, "std": 0.0} for k in ("1", "5", "all")}


def test_label_draws_are_per_class_and_reproducible():
    labels = np.repeat(np.arange(3), 10)
    a = draw_labelled(labels, 2, seed=0)
    assert np.bincount(labels[a]).tolist() == [2, 2, 2]
    assert np.array_equal(a, draw_labelled(labels, 2, seed=0))
    assert not np.array_equal(a, draw_labelled(labels, 2, seed=1))


def test_budgets_larger_than_a_class_are_left_out():
    labels = np.repeat(np.arange(2), 3)
    feats = np.eye(2)[labels]
    assert set(knn_table(feats, labels, feats, labels, shots=(1, 5, None))) == {"1", "all"}
