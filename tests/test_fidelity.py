"""The shipped runs make the papers' points: every claim of kdviz.fidelity holds.

This is data: it fails when someone ships worse runs (issue 16). The bias-shift and
comparison claims read the runs' recorded metrics and test-set logits, no training."""
import pytest

from kdviz import fidelity

from .conftest import needs_data


@needs_data
def test_every_claim_of_the_shipped_runs_holds():
    rows = fidelity.claims()
    failed = [f"{c.claim}: paper {c.paper}, shipped {c.shipped}" for c in rows if c.ok is False]
    assert not failed, "\n".join(failed)
    claims = {c.claim for c in rows}
    assert any(c.startswith("Omitted 3") for c in claims) and any(c.startswith("Only 7s and 8s") for c in claims)
    for dataset in ("MNIST", "Fashion-MNIST"):
        assert sum(c.startswith(f"{dataset} comparison") for c in claims) == len(fidelity.COMPARED_CLAIMS)


def test_a_worse_run_fails_its_claim():
    manifest = {"checkpoints": [
        {"name": f"s{k}", "method": m, "group": "compare-pretrained-mnist", "metrics": {"test_acc": acc}}
        for k, (m, acc) in enumerate([("plain", 0.99), ("plain", 0.98), ("kd", 0.97), ("kd", 0.99)])]}
    [kd] = fidelity.comparison_claims(manifest, "mnist", methods=("kd",))
    assert kd.ok is False and "98.00 % (2 seeds) vs plain 98.50 %" in kd.shipped
    manifest["checkpoints"][2]["metrics"]["test_acc"] = 0.985
    assert fidelity.comparison_claims(manifest, "mnist", methods=("kd",))[0].ok is True


@pytest.mark.parametrize("errors, ok", [((80, 160, 100), True), ((81, 160, 100), False), ((70, 160, 110), False)])
def test_hinton_claims_follow_the_paper_thresholds(errors, ok):
    teacher, plain, distilled = errors
    entries = [{"label": f"Hinton 2015 · {title}", "group": "hinton-pretrained", "run_id": key,
                "metrics": {"test_errors": e}} for key, title, e in (
        ("t", "teacher 1200-1200, dropout + jitter", teacher), ("p", "plain student 800-800", plain),
        ("d", "distilled student 800-800", distilled))]
    rows = fidelity.hinton_claims({"checkpoints": entries}, store=None, ds=None)
    assert all(r.ok for r in rows) == ok
