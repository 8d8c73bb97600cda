"""Losses, masking and the ordinal head."""

from __future__ import annotations

import torch

from model.classifier import IGNORE_INDEX, OrdinalHead, ordinal_probs
from model.taxonomy import Taxonomy
from tests.conftest import tiny_model


def _grads(model, labels):
    clf = model.classifier
    clf.zero_grad()
    batch = model.encode(["the package arrived late", "great product thanks"])
    out = clf(**batch.model_inputs(), labels=labels)
    out["loss"].backward()
    return {
        name: head.weight.grad if hasattr(head, "weight") else head.score.weight.grad
        for name, head in clf.heads.items()
    }, out


def test_missing_labels_contribute_zero_gradient():
    model = tiny_model()
    model.classifier.train()
    labels = {
        "issue_type": torch.full((2, 13), -1.0),  # not labelled for issue_type
        "sentiment": torch.tensor([0, IGNORE_INDEX]),  # only the first row is labelled
        "urgency": torch.tensor([IGNORE_INDEX, IGNORE_INDEX]),
    }
    grads, out = _grads(model, labels)
    assert grads["issue_type"] is None or torch.count_nonzero(grads["issue_type"]) == 0
    assert grads["urgency"] is None or torch.count_nonzero(grads["urgency"]) == 0
    assert torch.count_nonzero(grads["sentiment"]) > 0
    assert set(out["task_losses"]) == {"sentiment"}


def test_masked_row_equals_dropping_it():
    """The loss with row 2 unlabelled equals the loss over row 1 alone (dropout off)."""
    model = tiny_model()
    clf = model.classifier.eval()
    batch = model.encode(["the package arrived late", "great product thanks"])
    logits = clf(**batch.model_inputs())["logits"]
    masked, _ = clf.compute_loss(logits, {"sentiment": torch.tensor([2, IGNORE_INDEX])})
    alone, _ = clf.compute_loss(
        {k: v[:1] for k, v in logits.items()}, {"sentiment": torch.tensor([2])}
    )
    assert torch.allclose(masked, alone)


def test_empty_label_set_is_a_negative_not_missing():
    model = tiny_model()
    model.classifier.train()
    labels = {"issue_type": torch.zeros((2, 13))}  # labelled: no issue at all
    grads, out = _grads(model, labels)
    assert torch.count_nonzero(grads["issue_type"]) > 0
    assert "issue_type" in out["task_losses"]


def test_no_labels_at_all_gives_zero_loss():
    model = tiny_model()
    labels = {"sentiment": torch.tensor([IGNORE_INDEX, IGNORE_INDEX])}
    _, out = _grads(model, labels)
    assert float(out["loss"].detach()) == 0.0


def test_ordinal_head_keeps_order():
    head = OrdinalHead(4, 4)
    with torch.no_grad():
        head.threshold_gaps.fill_(-20.0)  # even very negative raw gaps stay ordered
    th = head.thresholds()
    assert torch.all(th[1:] > th[:-1])
    x = torch.randn(64, 4)
    cum = head(x)
    ge = torch.sigmoid(cum)
    assert torch.all(ge[:, 1:] <= ge[:, :-1] + 1e-7)  # P(y>=k) non-increasing in k
    probs = ordinal_probs(cum)
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(1), torch.ones(64), atol=1e-5)


def test_ordinal_higher_score_shifts_mass_up():
    head = OrdinalHead(1, 4)
    with torch.no_grad():
        head.score.weight.fill_(1.0)
        head.score.bias.zero_()
    low, high = ordinal_probs(head(torch.tensor([[-2.0], [2.0]])))
    assert torch.all(
        torch.cumsum(high, 0)[:-1] <= torch.cumsum(low, 0)[:-1]
    )  # stochastic dominance
    assert int(high.argmax()) > int(low.argmax())


def test_ordinal_loss_learns_an_order():
    torch.manual_seed(0)
    head = OrdinalHead(1, 4)
    x = torch.linspace(-3, 3, 200).unsqueeze(1)
    y = torch.bucketize(x.squeeze(1), torch.tensor([-1.5, 0.0, 1.5]))
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    from model.classifier import task_loss

    task = Taxonomy.default()["urgency"]
    for _ in range(300):
        opt.zero_grad()
        loss, _ = task_loss(task, head(x), y)
        loss.backward()
        opt.step()
    acc = (ordinal_probs(head(x)).argmax(1) == y).float().mean()
    assert acc > 0.9


def test_class_weights_balance_rare_classes():
    from model.classifier import class_weights

    tax = tiny_model().taxonomy
    sentiment, issue = tax["sentiment"], tax["issue_type"]
    y = torch.tensor([0] * 8 + [1] * 2 + [IGNORE_INDEX] * 5)  # 8 of one class, 2 of another
    assert class_weights(sentiment, y, 0.0) is None
    full = class_weights(sentiment, y, 1.0)
    # fully balanced: each present class carries the same total weight
    assert torch.isclose(full[0] * 8, full[1] * 2)
    half = class_weights(sentiment, y, 0.5)
    assert torch.isclose(half[1] / half[0], torch.tensor(2.0))  # sqrt of 4
    multi = torch.zeros((10, issue.num_labels))
    multi[:2, 0] = 1.0  # label 0 on 2 of 10 rows
    pos = class_weights(issue, multi, 1.0)
    assert torch.isclose(pos[0], torch.tensor(4.0))  # 8 negatives / 2 positives


def test_class_weighted_loss_counts_a_rare_class_more():
    from model.classifier import task_loss

    tax = tiny_model().taxonomy
    task = tax["sentiment"]
    logits = torch.zeros((3, task.num_labels))
    logits[0, 0] = 3.0  # rows 0 and 1 are class 0, row 2 class 1 (wrong: predicted 0)
    logits[1, 0] = 3.0
    logits[2, 0] = 3.0
    y = torch.tensor([0, 0, 1])
    plain, _ = task_loss(task, logits, y)
    weighted, _ = task_loss(task, logits, y, torch.tensor([1.0, 4.0, 1.0])[: task.num_labels])
    assert weighted > plain  # the misclassified rare row weighs more
    urgency = tax["urgency"]
    cum = torch.zeros((3, urgency.num_labels - 1))
    plain_o, _ = task_loss(urgency, cum, y)
    same_o, _ = task_loss(urgency, cum, y, torch.ones(urgency.num_labels))
    assert torch.isclose(plain_o, same_o)
