"""The ProtoNet math against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from fsl.methods.protonet import ProtoNet, accuracy, protonet_loss, prototypes
from fsl.models.conv4 import Conv4
from fsl.models.distances import (
    CosineDistance,
    EuclideanDistance,
    ParametricDistance,
    build_distance,
    cosine_similarity,
    squared_euclidean,
)
from fsl.models.heads import MLPHead
from fsl.train.evaluate import ci95_from_sums, mean_ci95


def test_prototypes_are_class_means():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert torch.equal(prototypes(z, labels, 2), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))


def test_prototypes_follow_labels_not_order():
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    labels = torch.tensor([1, 0, 1, 0])
    assert torch.equal(prototypes(z, labels, 2), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))


def test_prototypes_need_every_class():
    with pytest.raises(ValueError, match="every class"):
        prototypes(torch.zeros(2, 3), torch.tensor([0, 0]), 2)


def test_squared_euclidean_by_hand():
    q = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # (0,0): 4, 9; (2,1): 0+1=1, 4+4=8
    assert torch.equal(squared_euclidean(q, p), torch.tensor([[4.0, 9.0], [1.0, 8.0]]))
    assert torch.equal(EuclideanDistance()(q, p), -torch.tensor([[4.0, 9.0], [1.0, 8.0]]))


def test_distances_work_on_batches_of_episodes():
    q, p = torch.randn(3, 7, 4), torch.randn(3, 5, 4)
    batched = squared_euclidean(q, p)
    assert batched.shape == (3, 7, 5)
    assert torch.allclose(batched[1], squared_euclidean(q[1], p[1]))


def test_cosine_with_fixed_and_learned_temperature():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    assert torch.allclose(cosine_similarity(q, p), torch.tensor([[1.0, 1 / math.sqrt(2), 0.0]]))
    fixed = CosineDistance(temperature=10.0, learn_temperature=False)
    assert torch.allclose(fixed(q, p), torch.tensor([[10.0, 10 / math.sqrt(2), 0.0]]))
    assert not any(p.requires_grad for p in fixed.parameters())
    learned = CosineDistance(temperature=16.0, learn_temperature=True)
    assert learned.temperature == pytest.approx(16.0)
    assert [n for n, _ in learned.named_parameters()] == ["log_temperature"]


def test_parametric_distance_is_zero_on_identical_pairs_and_grows_with_distance():
    torch.manual_seed(0)
    d = ParametricDistance(dim=4)
    q = torch.zeros(1, 4)
    p = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    logits = d(q, p)[0]
    assert logits[0].item() == pytest.approx(0.0)
    assert logits[0] > logits[1] > logits[2]
    assert {n for n, _ in d.named_parameters()} >= {"log_scale"}


def test_build_distance_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        build_distance("manhattan", 8)


def test_loss_and_accuracy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    # softmax = [1/4, 3/4]: cross-entropy of class 1 is log(4/3)
    assert protonet_loss(logits, torch.tensor([1])).item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    assert protonet_loss(logits, torch.tensor([0])).item() == pytest.approx(math.log(4), abs=1e-6)
    two = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert accuracy(two, torch.tensor([1, 1])).item() == pytest.approx(0.5)
    assert accuracy(two, torch.tensor([1, 0])).item() == pytest.approx(1.0)


def test_mean_ci95_by_hand():
    mean, ci = mean_ci95([0.5, 1.0])
    assert mean == pytest.approx(0.75)
    assert ci == pytest.approx(1.96 * 0.25 / math.sqrt(2))
    values = np.array([0.2, 0.4, 0.4, 0.8, 1.0])
    assert ci95_from_sums(values.sum(), (values**2).sum(), values.size) == pytest.approx(mean_ci95(values))
    with pytest.raises(ValueError):
        mean_ci95([])


def test_conv4_shapes_and_parameter_count():
    conv4 = Conv4()
    assert conv4.output_dim(84) == 1600
    assert conv4.output_dim(32) == 256
    # 1,792 for the first conv, 36,928 for each of the others, 128 per BatchNorm (the notes' hand count).
    assert sum(p.numel() for p in conv4.parameters()) == 1792 + 3 * 36928 + 4 * 128 == 113_088
    assert conv4(torch.zeros(2, 3, 32, 32)).shape == (2, 256)
    with pytest.raises(ValueError, match="too small"):
        conv4.output_dim(8)


def test_head_depths():
    assert len(MLPHead(256, 0)) == 0 and MLPHead(256, 0).out_dim == 256
    assert [type(m).__name__ for m in MLPHead(256, 2, 64)] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert MLPHead(256, 3, 64)(torch.zeros(4, 256)).shape == (4, 64)
    with pytest.raises(ValueError, match="0..3"):
        MLPHead(256, 4)


def test_protonet_forward_matches_the_pure_functions():
    torch.manual_seed(0)
    model = ProtoNet(image_size=16, head_depth=1, head_width=8, distance="euclidean").eval()
    images = torch.randn(2 * 2 + 6, 3, 16, 16)  # 2-way 2-shot, then 6 queries
    z = model.embed(images)
    expected = -squared_euclidean(z[4:], prototypes(z[:4], torch.tensor([0, 0, 1, 1]), 2))
    assert torch.allclose(model(images, n_way=2, k_shot=2), expected, atol=1e-5)


def test_embedding_batches_keep_the_first_feature_map_under_its_budget():
    from fsl.train.evaluate import embed_batch_size

    # 128 MiB / (64 channels x 84 x 84 x 4 bytes) = 74.0 images; 32 px: 512, capped at 500; 224 px: 10, raised to 16
    assert embed_batch_size((84, 84)) == 74
    assert embed_batch_size((32, 32)) == 500
    assert embed_batch_size((224, 224)) == 16


def test_embeddings_do_not_depend_on_the_batch_size():
    from fsl.train.evaluate import embed_rows

    torch.manual_seed(0)
    model = ProtoNet(image_size=16, head_depth=0, distance="euclidean").eval()
    images = torch.randint(0, 256, (20, 16, 16, 3), dtype=torch.uint8)
    rows = np.array([3, 0, 7, 19, 12])
    torch.testing.assert_close(embed_rows(model, images, rows, batch_size=2), embed_rows(model, images, rows))
