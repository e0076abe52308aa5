import numpy as np

from embedserve.labelling import Job, audit
from embedserve.metric import Metric
from tests.labelling.conftest import blobs


def test_audit_ranks_planted_flips_first():
    x, cluster = blobs([60, 60, 60], spread=0.2, seed=2)
    row_class = cluster.copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(x), 9, replace=False)
    row_class[flipped] = (cluster[flipped] + 1) % 3
    found = audit(x, row_class, 3, 9, 10, 0.07, Metric.COSINE, Job())
    assert {f.row for f in found} == set(flipped)
    for f in found:
        assert f.suggested_class == cluster[f.row]  # the neighbours' label is the true one
        assert f.score < 0.5
    assert [f.score for f in found] == sorted(f.score for f in found)


def test_audit_leaves_each_item_out_of_its_own_vote():
    x, cluster = blobs([5, 5], spread=0.05)
    row_class = cluster.copy()
    row_class[0] = 1  # alone in its blob with that label: its own vote would hide it
    found = audit(x, row_class, 2, 1, 3, 0.07, Metric.COSINE, Job())
    assert found[0].row == 0 and found[0].suggested_class == 0


def test_unlabelled_items_are_not_audited():
    x, cluster = blobs([10, 10], spread=0.05)
    row_class = np.full(20, -1)
    row_class[[0, 1, 10, 11]] = [0, 0, 1, 1]
    found = audit(x, row_class, 2, 10, 3, 0.07, Metric.COSINE, Job())
    assert {f.row for f in found} == {0, 1, 10, 11}
