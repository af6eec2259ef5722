"""The GPU machine has torch but no streamlit, plotly or captum: the engine must not need them."""
import subprocess
import sys
from pathlib import Path

ENGINE = ["data", "models", "losses", "methods", "train", "store", "jobs", "cli", "compare", "replay",
          "pretrain", "metrics", "analysis", "sweep", "views", "datafree", "privileged", "transfer",
          "distillation_map", "classroom", "explain", "catalog"]
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('streamlit', 'plotly', 'captum', 'ray'):  # ray: only when a sweep asks
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_engine_imports_without_ui_packages():
    code = BLOCKER + "".join(f"import kdviz.{m}\n" for m in ENGINE) + "from kdviz.cli import main\nmain(['runs', '--runs', '/nonexistent'])\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
