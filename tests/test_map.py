"""The map of distillation: built from the methods registry, rendered as a page whose links
open the Training lab with the method preselected."""
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import distillation_map as kdmap
from kdviz import methods

from .conftest import ROOT, needs_data


def _names(cell) -> list[str]:
    return [e.name for e in cell]


def test_every_method_of_kdviz_sits_in_its_cell():
    cells = kdmap.grid()
    assert _names(cells[("logit", "offline")]) == ["kd", "kd_at", "dkd", "takd"]
    assert _names(cells[("feature", "offline")]) == ["fitnet", "at", "kd_at", "at_grad"]
    assert _names(cells[("relational", "offline")]) == ["fsp", "rkd", "darkrank"]
    assert _names(cells[("logit", "online")]) == ["dml"]
    assert _names(cells[("logit", "self")]) == ["bornagain", "byot", "meanteacher"]
    assert _names(cells[("feature", "self")]) == ["byot"]
    assert _names(cells[("parameter", "self")]) == ["meanteacher"]  # its teacher is an average of its weights
    assert _names(cells[("logit", "multi-teacher")]) == ["ensemble"]
    assert _names(cells[("logit", "data-free")]) == ["datafree"]
    assert _names(cells[("logit", "privileged")]) == ["privileged"]
    assert not any(cells[("graph", m)] for m in kdmap.MODES)  # kdviz has no graph models
    placed = {e.name for cell in cells.values() for e in cell}
    assert placed == set(methods.METHODS) - {"plain"} and kdmap.unplaced() == []
    assert tuple(kdmap.KNOWLEDGE) == methods.KNOWLEDGE_FORMS and tuple(kdmap.MODES) == methods.LEARNING_MODES


def test_entries_carry_paper_idea_and_where_to_run_them():
    kd = kdmap.grid()[("logit", "offline")][0]
    assert (kd.label, kd.paper, kd.page) == ("KD (soft targets)", "Hinton, Vinyals & Dean 2015", "")
    assert kd.idea == "The student matches the teacher's probabilities softened at temperature T, plus the true " \
                      "labels at weight 1 − alpha."
    assert kdmap.grid()[("logit", "data-free")][0].page == "pages/datafree.py"
    assert kdmap.idea("One idea. Then more.") == "One idea."


class _Graph(methods.Method):
    name, label, paper = "gnn_kd_test", "GNN KD (test)", "Yang et al. 2020"
    about = "Distil a graph network's local structure. More words."
    knowledge, modes = ("graph", "relational"), ("offline",)


class _Unplaced(methods.KD):
    name, label = "unplaced_test", "A method without a place"
    knowledge, modes = (), ()


@pytest.fixture
def registered():
    """Two methods registered the way another module would, removed afterwards."""
    for cls in (_Graph, _Unplaced):
        methods.register(cls)
    yield
    for cls in (_Graph, _Unplaced):
        methods.METHODS.pop(cls.name)


def test_a_method_registered_later_appears_by_itself(registered):
    cells = kdmap.grid()
    assert _names(cells[("graph", "offline")]) == ["gnn_kd_test"]
    assert _names(cells[("relational", "offline")]) == ["fsp", "rkd", "darkrank", "gnn_kd_test"]
    assert [e.name for e in kdmap.unplaced()] == ["unplaced_test"]


def test_a_subclass_inherits_its_parents_place():
    class Variant(methods.KD):  # e.g. a KD variant another helper registers without naming a place
        name = "variant"
    assert _names(kdmap.grid({"variant": Variant()})[("logit", "offline")]) == ["variant"]


# ---------------------------------------------------------------- the page

def _page(page: str, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _links(at: AppTest) -> dict[str, tuple[str, str]]:
    """label -> (page url path, query string) of every page link."""
    return {el.proto.label: (el.proto.page, el.proto.query_string) for el in at.get("page_link")}


def test_map_page_links_every_method_and_says_which_cells_are_empty(registered):
    at = _page("pages/map.py")
    links = _links(at)
    assert links["KD (soft targets)"] == ("train", "method=kd")
    assert links["Deep mutual learning (no teacher)"] == ("train", "method=dml")
    assert links["Data-free KD (DeepInversion)"][0] == "datafree"
    assert links["Privileged KD (generalised distillation)"][0] == "privileged"
    assert links["GNN KD (test)"] == ("train", "method=gnn_kd_test")  # registered after the page was written
    assert links["Mean teacher (moving average of the student)"] == ("train", "method=meanteacher")
    captions = [c.value for c in at.caption]
    empty = len(kdmap.MODES) * len(kdmap.KNOWLEDGE) - sum(bool(c) for c in kdmap.grid().values())
    assert captions.count("Not in kdviz.") == empty > 0
    assert any("A method without a place" in c for c in captions)  # unplaced methods are named, not hidden
    legend = at.dataframe[0].value.set_index("method")
    assert legend.loc["Relational KD (distances and angles)", "paper"] == "Park et al. 2019"
    assert legend.loc["KD + attention transfer", "knowledge"] == "Label / logit, Intermediate feature"
    assert legend.loc["GNN KD (test)", "idea"] == "Distil a graph network's local structure."
    assert "A method without a place" not in legend.index


@needs_data
def test_the_lab_opens_with_the_method_a_map_link_names(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_RUNS", str(tmp_path / "runs"))
    st.cache_resource.clear()
    at = _page("pages/train.py", method="fitnet")
    assert at.selectbox(key="train_method").value == "fitnet"
    assert "method" not in at.query_params  # read once: a later rerun keeps the user's choice
    at = _page("pages/train.py", method="no-such-method")
    assert at.selectbox(key="train_method").value == "kd"
    at = _page("pages/train.py", method="datafree")  # runs on its own page, which the map links to
    lab = at.selectbox(key="train_method")
    assert lab.value == "kd" and methods.get("kd").label in lab.options
    assert methods.get("datafree").label not in lab.options


def test_home_links_to_the_map():
    at = _page("pages/home.py")
    assert any(page == "map" for page, _ in _links(at).values())
