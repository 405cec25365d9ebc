"""Plot helpers refuse inputs that would draw a plausible but wrong figure, and mark unscored cells."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hooked_audio.app import conflict_plots, figures, method_plots, plots, temporal_plots, tracing_plots  # noqa: E402
from hooked_audio.app.report import HtmlReport  # noqa: E402

INF = float("inf")
GREY = matplotlib.colors.to_rgba("lightgrey")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_lines_refuse_a_table_and_empty_curves():
    with pytest.raises(ValueError, match=r"^curve 'a': one value per layer \(a non-empty 1-D series\) is needed, got shape \(4, 3\)"):
        figures.lines_by_layer({"a": torch.rand(4, 3)}, "y")
    with pytest.raises(ValueError, match=r"^no curves to plot: pass \{label: values\} with at least one curve$"):
        tracing_plots.plot_recovery_by_layer({})
    with pytest.raises(ValueError, match=r"^curve 'a': 3 layers but 4 values; give one layer per value$"):
        figures.lines_by_layer({"a": ([0, 1, 2], torch.rand(4))}, "y")


def test_listening_head_scores_mark_unscored_heads_grey():
    scores = torch.tensor([[0.2, -INF], [-0.5, 0.1]])
    fig = method_plots.plot_head_scores(scores, title="scores")
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.get_array().mask.tolist() == [[False, True], [False, False]]
    assert image.cmap.get_bad().tolist() == list(GREY)
    assert ax.get_title() == "scores (grey: 1 not scored)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    assert image.get_clim() == (-0.5, 0.5)  # white is a score of 0 (was the middle of the range, -0.15)
    with pytest.raises(ValueError, match=r"^every head is unscored \(-inf or NaN\)"):
        method_plots.plot_head_scores(torch.full((2, 2), -INF))
    with pytest.raises(ValueError, match=r"^scores must be a \[layer, head\] table, got shape \(2, 2, 3\)$"):
        method_plots.plot_head_scores(torch.rand(2, 2, 3))


def test_toy_head_scores_keep_negative_and_mask_nan(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.setdefault("fig", fig))
    plots.plot_head_scores(np.array([[-0.5, 0.2], [np.nan, 0.3]]), tmp_path / "h.png", "t")
    ax = seen["fig"].axes[0]
    assert ax.images[0].get_clim() == (-0.5, 0.3)
    assert ax.images[0].get_array().mask.tolist() == [[False, False], [True, False]]
    assert ax.get_title() == "t (grey: 1 NaN / inf)"


def test_back_patching_not_swept_cells_grey_and_refusals():
    sweep = torch.full((3, 3), float("nan"))
    sweep[1, 0], sweep[2, 0], sweep[2, 1] = 0.4, 0.6, 0.5
    fig = conflict_plots.plot_back_patching(sweep, 0.5)
    image = fig.axes[0].images[0]
    assert image.get_array().mask.tolist() == [[True, True, True], [False, True, True], [False, False, True]]
    assert image.cmap.get_bad().tolist() == list(GREY)
    assert fig.axes[0].get_title().replace("\n", " ") == "change of the text-dominance rate (grey: not swept)"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2"]  # layers, not half-layer ticks
    with pytest.raises(ValueError, match=r"^sweep is all NaN \(no pair swept\): nothing to plot$"):
        conflict_plots.plot_back_patching(torch.full((3, 3), float("nan")), 0.5)
    with pytest.raises(ValueError, match=r"^baseline must be the finite unpatched value, got nan$"):
        conflict_plots.plot_back_patching(sweep, float("nan"))


def test_attribution_shapes_must_match():
    result = {"effect": torch.rand(3, 4), "attribution": torch.rand(4, 3), "rank_correlation": 0.5}
    with pytest.raises(ValueError, match=r"^effect \(3, 4\) and attribution \(4, 3\) must have the same shape"):
        tracing_plots.plot_attribution_vs_activation(result)
    result = {"effect": torch.tensor([1.0, float("nan")]), "attribution": torch.rand(2), "rank_correlation": 0.5}
    with pytest.raises(ValueError, match=r"^effect and attribution must be finite in every cell"):
        tracing_plots.plot_attribution_vs_activation(result)


def test_temporal_profiles_checks():
    seconds = torch.arange(10) * 0.1
    with pytest.raises(ValueError, match=r"^profile 'a' has shape \(8,\) but seconds has \(10,\)"):
        temporal_plots.plot_temporal_profiles(seconds, {"a": torch.rand(8)})
    with pytest.raises(ValueError, match=r"^seconds must be one clip's token times \(1-D\), got shape \(2, 10\); pass seconds\[row\]$"):
        temporal_plots.plot_temporal_profiles(torch.stack([seconds, seconds]), {"a": torch.rand(2, 10)})
    with pytest.raises(ValueError, match=r"^window 3-3.4 s lies outside the clip's tokens \(0-0.9 s\)"):
        temporal_plots.plot_temporal_profiles(seconds, {"a": torch.rand(10)}, window=(3.0, 3.4))
    with pytest.raises(ValueError, match=r"^queried 'y' is not one of the events \['x'\]$"):
        temporal_plots.plot_temporal_profiles(seconds, {"a": torch.rand(10)}, events=[("x", 0.1, 0.3)], queried="y")
    fig = temporal_plots.plot_temporal_profiles(seconds, {"a": torch.rand(10)}, events=[("x", 0.1, 0.3)], queried="x",
                                                window=(0.15, 0.55))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["localised window", "a"]
    assert fig.axes[0].lines[0].get_xdata().tolist() == pytest.approx(seconds.tolist())


def test_lens_plots_check_labels(tmp_path):
    with pytest.raises(ValueError, match=r"^probs must be \[layer, example\] = \(4, 1\) for 4 layer labels and 1 names, got shape \(4, 3\)$"):
        plots.plot_lens_curves(np.random.rand(4, 3), list("abcd"), ["x"], tmp_path / "a.png", "")
    with pytest.raises(ValueError, match=r"^probs must be \[layer, position\] = \(2, 10\)"):
        plots.plot_lens_heatmap(np.random.rand(3, 10), list("ab"), list("abcdefghij"), None, 0.04, tmp_path / "b.png", "")
    with pytest.raises(ValueError, match=r"^audio span \(5, 30\) must satisfy 0 <= start < end <= 10 \(the token count\)$"):
        plots.plot_lens_heatmap(np.random.rand(3, 10), list("abc"), list("abcdefghij"), (5, 30), 0.04, tmp_path / "b.png", "")


def test_ablation_axis_widened_not_clipped(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.setdefault("fig", fig))
    plots.plot_ablation({"a": 2.5, "b": -0.5}, tmp_path / "d.png", "", ylabel="logit diff")
    assert seen["fig"].axes[0].get_ylim() == pytest.approx((-0.54, 2.7))
    with pytest.raises(ValueError, match=r"^no conditions to plot"):
        plots.plot_ablation({}, tmp_path / "d.png", "")


def test_report_table_refuses_ragged_rows():
    with pytest.raises(ValueError, match=r"^table row 0 has 1 cells but the header has 2 columns: \[1\]$"):
        HtmlReport("t").table(["a", "b"], [[1]])


def test_auc_head_scores_are_white_at_chance():
    """Was: the map was white at 0 whatever the method, so an AUC of 0 (attends more when wrong) was drawn as
    "no effect" and every chance head (0.5) as a listening one."""
    auc = torch.tensor([[0.0, 1.0], [0.5, 0.6]])
    image = method_plots.plot_head_scores(auc, centre=0.5).axes[0].images[0]
    assert image.get_clim() == (0.0, 1.0)
    white = image.cmap(image.norm(0.5))
    assert white == pytest.approx(image.cmap(0.5))  # chance is the map's middle
    assert method_plots.plot_head_scores(auc - 0.5).axes[0].images[0].get_clim() == (-0.5, 0.5)  # control: centre 0


def test_temporal_profiles_refuse_a_row_of_several_clips():
    """Was: a row holding two clips (token times restarting at 0 s) was drawn as one line jumping back in time."""
    two_clips = torch.cat([torch.arange(8) * 0.1, torch.arange(5) * 0.1])
    with pytest.raises(ValueError, match="seconds go back in time along the row"):
        temporal_plots.plot_temporal_profiles(two_clips, {"a": torch.rand(13)})
    padded = torch.cat([torch.full((3,), float("nan")), torch.arange(8) * 0.1])  # control: NaN padding is no clip
    fig = temporal_plots.plot_temporal_profiles(padded, {"a": torch.rand(11)}, ylabel="attention from the answer")
    assert fig.axes[0].get_ylabel() == "attention from the answer"


def test_ablation_bars_whose_names_wrap_alike_stay_two(tmp_path, monkeypatch):
    """Was: names that wrap to the same text ("a b", "a\\nb") were one category: both bars drawn at one place."""
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.setdefault("fig", fig))
    plots.plot_ablation({"a b": 0.9, "a\nb": 0.3}, tmp_path / "d.png", "")
    ax = seen["fig"].axes[0]
    assert [p.get_x() + p.get_width() / 2 for p in ax.patches] == [0, 1]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.9, 0.3])


def test_lens_heatmap_writes_line_breaks_in_its_token_labels(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.setdefault("fig", fig))
    plots.plot_lens_heatmap(np.random.rand(2, 4), ["0", "1"], ["a", "\n", "<|AUDIO|>", "b"], (2, 3), 0.04, tmp_path / "l.png", "t")
    assert [t.get_text() for t in seen["fig"].axes[0].get_xticklabels()] == ["a", "\\n", "b"]


def test_attention_over_time_refuses_a_batch_of_waveforms(tmp_path):
    """Was: a [rows, samples] batch (or channels-first stereo) was drawn as one trace squashed at t = 0, without a
    word. Control: one clip of the attention's length is drawn."""
    attention = np.full(25, 1 / 25)
    with pytest.raises(ValueError, match=r"waveform must be one mono clip \(1-D samples\), got shape \(2, 16000\)"):
        plots.plot_attention_over_time(np.zeros((2, 16000)), 16000, attention, 0.04, tmp_path / "a.png", "t")
    assert plots.plot_attention_over_time(np.zeros(16000), 16000, attention, 0.04, tmp_path / "b.png", "t").exists()
