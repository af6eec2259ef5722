"""Issue 19's methods: DKD, TAKD, BYOT, mean teacher, DarkRank, gradient attention, logit standardisation."""
import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn as nn

from kdviz import losses, methods, models
from kdviz import train as T
from kdviz.train import TrainConfig

E = math.e


# ---------------------------------------------------------------- DKD (Zhao et al. 2022)

def test_dkd_parts_hand_values_three_classes():
    # teacher logits (2, 1, 0), student (0, 0, 0), label 0, T = 1
    t, s, y = torch.tensor([[2.0, 1.0, 0.0]]), torch.zeros(1, 3), torch.tensor([0])
    pt = E**2 / (E**2 + E + 1)  # teacher's target probability
    tckd_hand = pt * math.log(pt / (1 / 3)) + (1 - pt) * math.log((1 - pt) / (2 / 3))
    q = (E / (E + 1), 1 / (E + 1))  # teacher's non-target classes renormalised; the student's are (½, ½)
    nckd_hand = sum(qi * math.log(qi / 0.5) for qi in q)
    tckd, nckd, p = losses.dkd_parts(s, t, y, 1.0)
    assert tckd.item() == pytest.approx(tckd_hand, rel=1e-5)
    assert nckd.item() == pytest.approx(nckd_hand, rel=1e-5)
    assert p.item() == pytest.approx(pt, rel=1e-6)
    # DKD = (α·TCKD + β·NCKD)·T²; at T = 2 the parts are those of the logits halved
    tckd2, nckd2, _ = losses.dkd_parts(s / 2, t / 2, y, 1.0)
    assert losses.dkd_loss(s, t, y, 2.0, 1.0, 8.0).item() == pytest.approx(4 * (tckd2 + 8 * nckd2).item(), rel=1e-5)


def test_tckd_plus_weighted_nckd_is_exactly_kd():
    """Zhao et al. 2022, eq. 7: KD = TCKD + (1 − p_t)·NCKD, image by image, at any T."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g, dtype=torch.float64) * 3, torch.randn(16, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    for temp in (1.0, 4.0, 20.0):
        tckd, nckd, p = losses.dkd_parts(s, t, y, temp)
        assert (temp**2 * (tckd + (1 - p) * nckd)).mean().item() == pytest.approx(
            losses.kd_loss(s, t, temp).item(), rel=1e-12, abs=1e-14)


def test_dkd_gradients_are_finite_for_a_sure_teacher():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.zeros(4, 10)
    t[:, 3] = 200.0  # the teacher's target probability is 1 in float32
    losses.dkd_loss(s, t, torch.full((4,), 3), 4.0).backward()
    assert torch.isfinite(s.grad).all()


def test_dkd_warmup_scales_the_term_linearly():
    st = methods.Step(torch.tensor([0]), torch.zeros(1, 3), t_logits=torch.tensor([[2.0, 1.0, 0.0]]))
    cfg = TrainConfig(dkd_warmup=2.0)
    full = losses.dkd_loss(st.s_logits, st.t_logits, st.y, cfg.T, cfg.dkd_alpha, cfg.dkd_beta).item()
    for epoch, factor in ((0.5, 0.25), (1.0, 0.5), (3.0, 1.0)):
        st.epoch = epoch
        assert methods.TERMS["dkd"].fn(st, cfg).item() == pytest.approx(factor * full)


# ---------------------------------------------------------------- logit standardisation (Sun et al. 2024)

def test_zscore_standardises_and_kd_ignores_shift_and_scale():
    z = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    n = losses.zscore(z)
    assert n.mean().item() == pytest.approx(0.0, abs=1e-6) and n.std().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(n, (z - 3.0) / math.sqrt(14 / 3), atol=1e-6)  # mean 3, unbiased variance 14/3
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    on, off = TrainConfig(logit_standardize=True), TrainConfig()
    st = methods.Step(torch.zeros(5, dtype=torch.long), s, t_logits=t)
    shifted = methods.Step(st.y, 7 * s + 3, t_logits=t)
    # standardised, a student whose logits are the teacher's up to scale and shift has nothing left to learn
    same = methods.Step(st.y, 5 * t - 2, t_logits=t)
    assert methods.TERMS["kd"].fn(same, on).item() == pytest.approx(0.0, abs=1e-5)
    assert methods.TERMS["kd"].fn(same, off).item() > 0.1
    assert methods.TERMS["kd"].fn(st, on).item() == pytest.approx(methods.TERMS["kd"].fn(shifted, on).item(), rel=1e-4)


# ---------------------------------------------------------------- DarkRank (Chen, Wang & Zhang 2018)

POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # unit vectors


def test_darkrank_hand_value_on_four_points():
    # from point 0, the teacher's order is 3 (d² = 0.8), 1 (d² = 2), 2 (d² = 4); scores −3·d³
    d = {1: math.sqrt(2), 2: 2.0, 3: math.sqrt(0.8)}
    scores = [-3 * d[j] ** 3 for j in (3, 1, 2)]
    nll0 = sum(math.log(sum(math.exp(v) for v in scores[i:])) - scores[i] for i in range(3))
    per_query = losses.listmle(losses.darkrank_scores(POINTS).gather(1, torch.tensor([[3, 1, 2]])))
    assert per_query.item() == pytest.approx(nll0, rel=1e-9)
    # the loss itself: the student equals the teacher, mean over the four queries
    loss = losses.darkrank_loss(POINTS, POINTS, list_len=3).item()
    assert loss > 0 and loss == pytest.approx(losses.darkrank_loss(2 * POINTS, POINTS, list_len=3).item(), rel=1e-5)


def test_darkrank_is_smallest_when_the_student_ranks_as_it_scores():
    """ListMLE is never 0 for finite scores: its minimum over the teacher's possible rankings is the
    student's own order, and it tends to 0 as the student's scores separate."""
    scores = torch.tensor([[-0.5, -2.0, -1.0, -4.0]])
    nll = {p: losses.listmle(scores[:, list(p)]).item() for p in itertools.permutations(range(4))}
    assert min(nll, key=nll.get) == (0, 2, 1, 3)
    assert losses.listmle(40 * scores[:, [0, 2, 1, 3]]).item() < 1e-6
    # as a distillation loss: a student with the teacher's ranking scores lower than one with another ranking
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(12, 8, generator=g)
    rotated = 3 * teacher @ torch.linalg.qr(torch.randn(8, 8, generator=g))[0]  # the same relations, other axes
    other = torch.randn(12, 8, generator=g)
    assert losses.darkrank_loss(rotated, teacher) < losses.darkrank_loss(other, teacher)


# ---------------------------------------------------------------- gradient attention (Zagoruyko & Komodakis 2017, §3.2)

def test_input_gradient_term_matches_finite_differences():
    """d/dθ of ½‖J_S − J_T‖² by double backprop equals central finite differences (float64, tiny model)."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    teacher = nn.Sequential(nn.Linear(4, 3)).double().requires_grad_(False)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])

    def term():
        xs = x.clone().requires_grad_(True)
        st = methods.Step(y, student(xs), x=xs, teacher=teacher)
        return methods.TERMS["at_grad"].fn(st, TrainConfig())

    params = list(student.parameters())
    grads = torch.autograd.grad(term(), params)
    eps = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(p.numel()):
            flat[i] += eps
            up = term().item()
            flat[i] -= 2 * eps
            down = term().item()
            flat[i] += eps
            assert g.view(-1)[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_input_gradients_are_per_image():
    model = nn.Linear(3, 2)
    x = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 1])
    j = losses.input_gradients(model(x), y, x)
    x1 = x[2:3].detach().requires_grad_(True)
    assert torch.allclose(j[2], losses.input_gradients(model(x1), y[2:3], x1)[0], atol=1e-6)


# ---------------------------------------------------------------- mean teacher (Tarvainen & Valpola 2017)

def test_ema_update_is_the_formula_on_a_hand_example():
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([1.0, 2.0]))
        student.weight.copy_(torch.tensor([3.0, -2.0]))
        student.bias.copy_(torch.tensor([4.0, 0.0]))
        student.running_mean.copy_(torch.tensor([1.0, 0.0]))
    methods.ema_update(teacher, student, 0.75)
    assert teacher.weight.tolist() == pytest.approx([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
    assert teacher.bias.tolist() == pytest.approx([1.0, 0.0])  # 0.75 · 0 + 0.25 · 4
    assert teacher.running_mean.tolist() == [0.0, 0.0]  # its own statistics, from its own forward passes
    assert student.weight.tolist() == [3.0, -2.0]  # the student is untouched


def test_mean_teacher_decay_warms_up_as_the_official_code():
    method, cfg = methods.get("meanteacher"), TrainConfig(ema_decay=0.9)
    teacher, student = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    for steps, decay in ((1, 0.5), (3, 0.75), (100, 0.9)):
        with torch.no_grad():
            teacher.weight.fill_(1.0)
            student.weight.fill_(0.0)
        method.after_step(cfg, student, teacher, steps)
        assert teacher.weight.item() == pytest.approx(decay)


def test_consistency_and_rampup_hand_values():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    assert losses.consistency_loss(s, t).item() == pytest.approx(((0.5 - 0.75) ** 2 + (0.5 - 0.25) ** 2) / 2)
    assert losses.sigmoid_rampup(0.0, 2.0) == pytest.approx(math.exp(-5))
    assert losses.sigmoid_rampup(1.0, 2.0) == pytest.approx(math.exp(-5 * 0.25))
    assert losses.sigmoid_rampup(5.0, 2.0) == 1.0 and losses.sigmoid_rampup(0.0, 0.0) == 1.0


# ---------------------------------------------------------------- BYOT exits (Zhang et al. 2019)

def test_exits_are_taps_of_the_one_feature_mechanism():
    net = models.build("cnn_s+exits")
    assert net.arch == "cnn_s+exits" and net.exit_count == 2 and net.head is net.net.head
    logits, feats = net.features(torch.zeros(2, 1, 28, 28))
    assert {"stem", "stage1", "stage2", "stage3", "pool", "exit1", "exit2", "exit1_logits", "exit2_logits"} <= set(feats)
    assert feats["exit1"].shape == (2, 128, 28, 28) and feats["exit2_logits"].shape == (2, 10)
    assert torch.equal(net(torch.zeros(2, 1, 28, 28)), logits)
    assert net.spatial_layers == ["stage1", "stage2", "stage3", "exit1", "exit2"]
    with pytest.raises(ValueError, match="CNN's stages"):
        models.build("mlp800+exits")


def test_byot_loss_hand_value():
    z1, final = torch.tensor([[0.0, 0.0]], requires_grad=True), torch.tensor([[math.log(3.0), 0.0]])
    f1, ff, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # T = 1
    hand = 0.9 * math.log(2) + 0.1 * kl + 0.01 * 5
    assert losses.byot_loss([z1], [f1], final, ff, y, 1.0, 0.1, 0.01).item() == pytest.approx(hand, rel=1e-6)
    final.requires_grad_(True)
    losses.byot_loss([z1], [f1], final, ff, y, 1.0, 0.1, 0.01).backward()
    assert final.grad is None or not final.grad.any()  # the deepest exit is the teacher: a constant


# ---------------------------------------------------------------- TAKD (Mirzadeh et al. 2020)

def test_assistant_is_between_teacher_and_student():
    count = lambda name: models.param_count(models.build(name))
    arch = methods.assistant_for("cnn_l", "cnn_s")
    assert models.build(arch).kind == "conv" and count("cnn_s") < count(arch) < count("cnn_l")
    middle = math.sqrt(count("cnn_s") * count("cnn_l"))
    between = [m for m in models.MODELS if models.build(m).kind == "conv" and count("cnn_s") < count(m) < count("cnn_l")]
    assert all(abs(math.log(count(arch) / middle)) <= abs(math.log(count(m) / middle)) for m in between)
    with pytest.raises(ValueError, match="assistant: no registered mlp model"):
        methods.assistant_for("mlp1200", "mlp800")


# ---------------------------------------------------------------- config checks live in the methods

@pytest.mark.parametrize("method,field,value,msg", [
    ("dkd", "dkd_beta", -1.0, "dkd_beta:"), ("meanteacher", "ema_decay", 1.0, "ema_decay:"),
    ("byot", "byot_alpha", 1.5, "byot_alpha:"), ("byot", "model", "mlp800", "model: BYOT"),
    ("takd", "assistant", "nonet", "assistant:"), ("dml", "cohort", 1, "cohort:"),
    ("bornagain", "generations", 0, "generations:"),
])
def test_each_method_checks_its_own_fields(method, field, value, msg):
    cfg = TrainConfig(**{"model": "cnn_s", "method": method, "teacher": "t", field: value})
    with pytest.raises(ValueError, match=msg):
        T.validate(cfg)
    T.validate(TrainConfig(**{"model": "cnn_s", "method": "kd", "teacher": "t", field: value}))  # KD ignores it


# ---------------------------------------------------------------- tiny runs on MNIST

from kdviz import cli, compare  # noqa: E402

from .conftest import needs_data  # noqa: E402

TINY = ["--train-subset", "1000", "--batch-size", "16", "--lr", "0.1", "--epochs", "1"]


@needs_data
@pytest.mark.parametrize("argv", [
    ["distill", "--method", "dkd", "--student", "cnn_s"], ["distill", "--method", "darkrank", "--student", "cnn_s"],
    ["distill", "--method", "at_grad", "--student", "cnn_s"], ["distill", "--method", "takd", "--student", "cnn_xs"],
    ["train", "--method", "byot", "--model", "cnn_s"], ["train", "--method", "meanteacher", "--model", "cnn_s"],
], ids=lambda argv: argv[2])
def test_cli_trains_each_method_on_mnist(argv, tiny_store, capsys):
    teacher = ["--teacher", tiny_store.runs["cnn_teacher"]] if argv[0] == "distill" else []
    assert cli.main([*argv, *teacher, *TINY, "--runs", str(tiny_store.root)]) == 0
    out = capsys.readouterr().out
    run_id = out.strip().splitlines()[-1].removeprefix("run id: ")
    info = tiny_store.get(run_id)
    method = argv[2]
    assert info.status == "done" and info.config["method"] == method
    assert info.summary["test_acc"] > 0.2  # it learns: chance is 0.1
    terms = set(methods.get(method).stages(TrainConfig.from_dict(info.config))[0].weights)
    steps = [r for r in tiny_store.metrics(run_id) if r["kind"] == "step"]
    assert steps and all(math.isfinite(r[t]) and r[t] >= 0 for r in steps for t in terms)
    if method == "takd":  # the assistant first, between teacher and student, then the student from it
        assistant = tiny_store.get(info.config["assistant_run"])
        assert out.count("run id:") == 2 and assistant.config["method"] == "kd"
        assert assistant.config["model"] == info.config["assistant"] == methods.assistant_for("cnn_s", "cnn_xs")
        assert assistant.config["teacher"] == info.config["teacher"] == tiny_store.runs["cnn_teacher"]
    if method == "byot":
        assert {"exit1_test_acc", "exit2_test_acc"} <= set(info.summary) and "exit1 0." in out
        model, _ = tiny_store.load_model(run_id)  # saved with its exits, so the pages can tap them
        assert model.arch == "cnn_s+exits" and info.summary["params"] == models.param_count(model.net)
    if method == "meanteacher":
        epochs = [r for r in tiny_store.metrics(run_id) if r["kind"] == "epoch"]
        assert 0.1 < epochs[-1]["teacher_test_acc"] == info.summary["teacher_test_acc"]


@needs_data
def test_byot_exits_are_reported_and_rise_with_depth(store):
    r = T.train(TrainConfig(model="cnn_s", method="byot", train_subset=2000, batch_size=32, lr=0.1, epochs=1), store)
    s = r.summary
    assert s["exit1_test_acc"] < s["exit2_test_acc"] < s["test_acc"]  # 0.31 < 0.38 < 0.46 here (seeds 1, 2 alike)


@needs_data
def test_mean_teacher_is_an_ungraded_moving_average(store):
    cfg = T.validate(TrainConfig(model="cnn_xs", method="meanteacher", train_subset=64, batch_size=32))
    cfg, (ds, x, y, student, teacher, extras, method, device) = T._setup(cfg, store)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    stage = method.stages(cfg)[0]
    st = method.forward(cfg, stage, student, teacher, x[:32].float() / 255, y[:32])
    st.epoch = 1.0
    loss = sum(w * methods.TERMS[t].fn(st, cfg) for t, w in stage.weights.items())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    method.after_step(cfg, student, teacher, 1)  # decay min(1 − 1/2, 0.99) = 0.5
    for b, t, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * s)


@needs_data
def test_compare_plans_the_new_groups(tiny_store):
    base = TrainConfig(model="cnn_s", teacher=tiny_store.runs["cnn_teacher"], train_subset=200)
    configs, notes = compare.plan(tiny_store, base, 1, compare.ORDER)
    assert {c.method for c in configs} == set(compare.ORDER) - {"takd"}  # nothing lies between cnn_s and cnn_s
    assert len(notes) == 1 and notes[0].startswith("TAKD") and "no registered conv model" in notes[0]
    configs, _ = compare.plan(tiny_store, dataclasses.replace(base, model="cnn_xs"), 1, ("takd",))
    assert [c.method for c in configs] == ["takd"]
    mlp = TrainConfig(model="mlp30", teacher=tiny_store.runs["mlp_teacher"], train_subset=200)
    configs, notes = compare.plan(tiny_store, mlp, 1, compare.SETS["Own teacher: self-distillation and mean teacher"])
    assert [c.method for c in configs] == ["plain", "kd", "meanteacher"]
    assert len(notes) == 1 and "BYOT puts exits on a CNN's stages" in notes[0]
    configs, notes = compare.plan(tiny_store, mlp, 1, compare.SETS["Attention: activations vs input gradients"])
    assert [c.method for c in configs] == ["plain", "at_grad"]  # gradient attention needs no feature maps
    configs, notes = compare.plan(tiny_store, mlp, 1, compare.SETS["Capacity gap: KD vs a teacher assistant"])
    assert "takd" in {c.method for c in configs}  # mlp100 and mlp300 lie between the 30-unit student and its teacher


@needs_data
def test_takd_chain_and_inner_accuracies_for_the_compare_page(store):
    quick = dict(train_subset=300, batch_size=32, epochs=1, augment=False)
    teacher = T.train(TrainConfig(model="cnn_s", **quick), store).run_id
    kd = T.train(TrainConfig(model="cnn_xs", method="kd", teacher=teacher, **quick), store)
    assistant, student = T.train_all(TrainConfig(model="cnn_xs", method="takd", teacher=teacher, **quick), store)
    assert store.get(assistant.run_id).config["group"].startswith("takd-")  # not in a comparison's table
    runs = [store.get(r.run_id) for r in (kd, student)]
    chain = compare.takd_chains(store, runs)
    assert len(chain) == 1
    row = chain.iloc[0]
    assert (row.teacher, row.assistant, row.student) == ("cnn_s", "resnet8", "cnn_xs")
    assert row["assistant acc (%)"] == pytest.approx(100 * assistant.summary["test_acc"])
    assert row["direct KD acc (%)"] == pytest.approx(100 * kd.summary["test_acc"])
    byot = T.train(TrainConfig(model="cnn_xs", method="byot", **quick), store)
    inner = compare.inner_accuracies([store.get(byot.run_id), *runs])
    assert inner.part.tolist() == ["exit 1", "exit 2", "deepest exit (the network)"]
    assert inner["test accuracy (%)"].tolist() == pytest.approx(
        [100 * byot.summary[k] for k in ("exit1_test_acc", "exit2_test_acc", "test_acc")])
