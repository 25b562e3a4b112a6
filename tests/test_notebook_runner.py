"""The notebook runner's last step before saving: progress bars show where they ended, not where they began."""

import json
from pathlib import Path

import nbformat

from recursionlab.course.notebooks import WIDGET_STATE, WIDGET_VIEW, progress_bars_show_their_end

ROOT = Path(__file__).resolve().parents[1]


def _notebook(children: list[tuple[str, dict]], text: str = "training:   0%|          | 0/800 [00:00<?, ?it/s]"):
    state = {f"c{i}": {"model_name": name, "state": values} for i, (name, values) in enumerate(children)}
    state["box"] = {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_c{i}" for i in range(len(children))]}}
    output = {"output_type": "display_data", "metadata": {},
              "data": {"text/plain": text, WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0}}}
    return {"cells": [{"cell_type": "code", "source": "", "outputs": [output]}],
            "metadata": {"widgets": {WIDGET_STATE: {"state": state}}}}


def test_a_finished_bar_shows_its_final_state():
    nb = _notebook([("HTMLModel", {"value": "training:\u2007100%"}), ("FloatProgressModel", {"value": 800, "max": 800}),
                    ("HTMLModel", {"value": "\u2007800/800\u2007[00:07&lt;00:00,\u2007loss=0.05]"})])
    assert progress_bars_show_their_end(nb) == 1
    text = nb["cells"][0]["outputs"][0]["data"]["text/plain"]
    assert text == "training: 100%|##########| 800/800 [00:07<00:00, loss=0.05]"


def test_a_stopped_bar_shows_where_it_stopped_and_other_widgets_keep_their_text():
    nb = _notebook([("HTMLModel", {"value": "training:\u200730%"}), ("FloatProgressModel", {"value": 240, "max": 800}),
                    ("HTMLModel", {"value": "240/800"})])
    progress_bars_show_their_end(nb)
    assert nb["cells"][0]["outputs"][0]["data"]["text/plain"] == "training: 30%|###       | 240/800"
    slider = _notebook([("IntSliderModel", {"value": 3}), ("OutputModel", {"outputs": []})], text="interactive(...)")
    assert progress_bars_show_their_end(slider) == 0
    assert slider["cells"][0]["outputs"][0]["data"]["text/plain"] == "interactive(...)"
    assert progress_bars_show_their_end({"cells": [], "metadata": {}}) == 0  # no saved widget state at all


def test_committed_notebooks_show_finished_bars():
    """Every lesson and solution was saved through the runner (or this step): no bar stands at 0 % of a run that
    the notebook's own widget state says finished."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)  # as the runner holds it: multi-line text joined into strings
        before = json.dumps(nb)
        progress_bars_show_their_end(nb)
        assert json.dumps(nb) == before, f"{path.name}: run `progress_bars_show_their_end` (make notebooks does)"
