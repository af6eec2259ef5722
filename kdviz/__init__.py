"""kdviz: the engine behind the knowledge-distillation lab (no streamlit in here)."""
