"""Inspectors over seqcomp run folders (ipywidgets views on top of pure plotly figure functions)."""

from .dashboard import TrainingDashboard
from .explorer import EmbeddingExplorer
from .figures import (answer_type, budget_figure, collapse_over_training_figure, cross_input_cosine_heatmap, embedding_2d_figure,
                      filter_predictions, first_token_table, join_predictions, load_compressed, metrics_figure,
                      metrics_table, nearest_tokens, pretraining_figure, ratio_figure, rms_histogram, run_labels,
                      slot_cosine_heatmap, table_html, token_logprob_html, training_figure)
from .inspector import GenerationInspector, row_html
from .runsets import comparison_runs, resolve_run_dir

__all__ = ["EmbeddingExplorer", "GenerationInspector", "TrainingDashboard", "answer_type", "budget_figure",
           "collapse_over_training_figure", "comparison_runs", "cross_input_cosine_heatmap", "embedding_2d_figure",
           "filter_predictions", "first_token_table", "join_predictions", "load_compressed", "metrics_figure",
           "metrics_table", "nearest_tokens", "pretraining_figure", "ratio_figure", "resolve_run_dir", "rms_histogram",
           "row_html", "run_labels", "slot_cosine_heatmap", "table_html", "token_logprob_html", "training_figure"]
