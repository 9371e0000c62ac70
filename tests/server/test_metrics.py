"""server/metrics.py: the gateway's series, and children looked up once per label set."""

from server.metrics import Metrics


def test_child_is_the_labelled_child_created_on_first_use() -> None:
    m = Metrics()
    labels = {"adapter": "triage", "version": "1", "arm": "stable"}
    assert b"loraport_degenerate_answers_total{" not in m.exposition()  # no series yet
    child = m.child(m.degenerate_answers, "triage", "1", "stable")
    assert child is m.degenerate_answers.labels("triage", "1", "stable")
    assert m.child(m.degenerate_answers, "triage", "1", "stable") is child  # looked up once
    assert m.registry.get_sample_value("loraport_degenerate_answers_total", labels) == 0
    child.inc()
    assert m.registry.get_sample_value("loraport_degenerate_answers_total", labels) == 1


def test_children_of_different_metrics_or_labels_stay_apart() -> None:
    m = Metrics()
    a = m.child(m.prompt_tokens, "triage", "1", "stable")
    b = m.child(m.completion_tokens, "triage", "1", "stable")
    c = m.child(m.prompt_tokens, "triage", "2", "stable")
    assert len({id(a), id(b), id(c)}) == 3
    a.inc(5)
    labels = {"adapter": "triage", "version": "1", "arm": "stable"}
    assert m.registry.get_sample_value("loraport_prompt_tokens_total", labels) == 5
    assert m.registry.get_sample_value("loraport_completion_tokens_total", labels) == 0
