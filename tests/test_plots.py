"""fedlib.report (tables, figures, describe, io) on tiny hand-made run folders (tests/fabricate.py):
the arithmetic of the tables over seeds, the chance flag, what titles say, the axes of the
figures, and that missing runs are named instead of crashing."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from fabricate import MAJORITY, diagonal, history, write_run
from PIL import Image

from fedlib.errors import UserError
from fedlib.report import describe, figures
from fedlib.report import io as report_io
from fedlib.report import tables as report_tables
from fedlib.run import results

MODELS = ["resnet18", "mobilenet_v2"]


def title(fig) -> str:
    return fig._suptitle.get_text().replace("\n", " ")  # long lines wrap


def lines_by_gid(fig) -> dict[str, list]:
    return {line.get_gid(): list(line.get_xdata()) for ax in fig.axes for line in ax.get_lines() if line.get_gid()}


@pytest.fixture
def three_seeds(tmp_path):
    """ResNet-18 learned (FedAvg test accuracy 12/24, 15/24, 18/24 over seeds 0-2; pooled 18/24);
    MobileNet-v2 called everything pneumonia in both modes (accuracy 20/24, balanced 1/3)."""
    for seed, right in zip((0, 1, 2), [(4, 4, 4), (6, 4, 5), (6, 6, 6)], strict=True):
        write_run(
            tmp_path,
            "resnet18",
            "fedavg",
            seed,
            test=diagonal(right),
            rows=history([1.0, 0.6, 0.5, 0.4], 32, [0.2, 0.9, 0.6, 0.3 + 0.1 * seed]),
        )
        write_run(tmp_path, "resnet18", "central", seed, test=diagonal((6, 6, 6)), rows=history([1.0, 0.5], 80))
        write_run(tmp_path, "mobilenet_v2", "fedavg", seed, test=MAJORITY)
        write_run(tmp_path, "mobilenet_v2", "central", seed, test=MAJORITY)
    return results.find_runs(tmp_path)


# ---------------------------------------------------------------- several seeds


def test_table2_gives_mean_and_sd_over_seeds_and_each_seed(three_seeds, tmp_path):
    # Execute
    t2 = report_tables.table2_fl_accuracy(three_seeds, MODELS, [0, 1, 2])
    # Assert: accuracies 0.5, 0.625, 0.75: mean 0.625, sample sd 0.125
    row = t2.iloc[0]
    assert row["model"] == "ResNet-18" and row["seeds"] == 3
    assert row["test_accuracy"] == pytest.approx(0.625)
    assert row["test_accuracy_sd"] == pytest.approx(0.125)
    # 95% t-interval of the mean: t(0.975, 2 df) = 4.3027 (any t table), times sd / sqrt(3)
    assert row["test_accuracy_ci95"] == pytest.approx(4.302653 * 0.125 / math.sqrt(3))
    assert row["test_accuracy_by_seed"] == "s0 0.500, s1 0.625, s2 0.750"
    # balanced accuracy: per-class sensitivities (0.5, 0.5, 0.5), (0.75, 0.5, 0.625), (0.75, 0.75, 0.75)
    assert row["test_balanced_accuracy"] == pytest.approx((0.5 + 0.625 + 0.75) / 3)
    # COVID-19 sensitivity 4/8, 5/8, 6/8
    assert row["test_covid19_sensitivity"] == pytest.approx(0.625)
    assert row["test_covid19_sensitivity_sd"] == pytest.approx(0.125)
    # last three evaluations: (0.9 + 0.6 + 0.3) / 3, (0.9 + 0.6 + 0.4) / 3, (0.9 + 0.6 + 0.5) / 3
    assert row["test_accuracy_last3"] == pytest.approx((0.6 + 0.6333333 + 0.6666667) / 3)
    assert row["test_accuracy_last3_sd"] == pytest.approx(1 / 30)
    assert "mean ± sd over 3 seeds (0, 1, 2)" in t2.attrs["caption"]
    # Markdown: mean ± sd in one cell, per-seed list beside it; per-seed CSV with every run
    paths = report_io.save_table(t2, tmp_path / "figures", "t2")
    md = (tmp_path / "figures" / "t2.md").read_text()
    assert (
        "| ResNet-18 | 3 | 1000 | 0.001 | 1.000 ± 0.000 [1.000, 1.000] | 0.625 ± 0.125 [0.314, 0.936] "
        "| s0 0.500, s1 0.625, s2 0.750 |" in md
    )
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "test_accuracy_sd" not in header and "_ci95" not in header
    per_seed = pd.read_csv(tmp_path / "figures" / "t2_per_seed.csv")
    assert [p.name for p in paths] == ["t2.csv", "t2.md", "t2_per_seed.csv"]
    assert per_seed[per_seed["model"] == "ResNet-18"]["test_accuracy"].tolist() == [0.5, 0.625, 0.75]
    assert per_seed["seed"].tolist() == [0, 1, 2, 0, 1, 2]


def test_table4_and_table3_average_over_seeds_too(three_seeds):
    t4 = report_tables.table4_pooled_accuracy(three_seeds, MODELS)
    assert t4["test_accuracy"].tolist() == pytest.approx([0.75, 20 / 24])
    assert t4["test_accuracy_sd"].tolist() == pytest.approx([0.0, 0.0])
    t3 = report_tables.table3_per_label(three_seeds, MODELS)
    # pneumonia sensitivity 4/8, 6/8, 6/8: mean 2/3, sd sqrt(((1/6)^2 + 2 (1/12)^2) / 2) = 0.1443
    assert t3.iloc[0]["pneumonia"] == pytest.approx(2 / 3)
    assert t3.iloc[0]["pneumonia_sd"] == pytest.approx(math.sqrt(((1 / 6) ** 2 + 2 * (1 / 12) ** 2) / 2))
    assert t3.iloc[0]["COVID-19_by_seed"] == "s0 0.500, s1 0.625, s2 0.750"


def test_with_one_seed_tables_say_so_and_show_no_spread(three_seeds, tmp_path):
    one = [r for r in three_seeds if r.seed == 0]
    t2 = report_tables.table2_fl_accuracy(one, MODELS)
    assert "1 seed (seed 0)" in t2.attrs["caption"] and "±" not in t2.attrs["caption"]
    assert not [c for c in t2.columns if c.endswith(("_sd", "_by_seed"))]
    assert "±" not in report_io.markdown_table(t2, 3)
    assert "1 seed (seed 0)" in title(figures.fig4_per_label_accuracy(one, MODELS))


def test_markdown_shows_mean_and_sd_in_one_cell_and_only_the_mean_without_sd():
    df = pd.DataFrame({"model": ["A", "B"], "acc": [0.8125, 0.5], "acc_sd": [0.0208, float("nan")]})
    assert report_io.markdown_table(df, 3).splitlines() == [
        "| model | acc |",
        "|---|---|",
        "| A | 0.812 ± 0.021 |",
        "| B | 0.500 |",
    ]


# ---------------------------------------------------------------- chance


def test_a_model_at_chance_is_flagged_in_tables_and_titles(three_seeds):
    t2 = report_tables.table2_fl_accuracy(three_seeds, MODELS)
    assert t2["seeds_at_chance"].tolist() == [0, 3]
    assert t2.iloc[1]["test_accuracy"] == pytest.approx(20 / 24)  # looks good, means nothing
    assert t2.iloc[1]["test_balanced_accuracy"] == pytest.approx(1 / 3)
    assert "AT CHANCE" in t2.attrs["caption"] and "MobileNet-v2 FedAvg (3 of 3 seeds)" in t2.attrs["caption"]
    assert "ResNet-18 FedAvg" not in t2.attrs["caption"]
    for fig in (
        figures.fig3_fl_loss(three_seeds, MODELS),
        figures.fig5_fl_vs_pooled_loss(three_seeds, MODELS),
        figures.fig4_per_label_accuracy(three_seeds, MODELS),
        figures.fig_confusion(three_seeds, MODELS),
    ):
        assert "AT CHANCE" in title(fig) and "MobileNet-v2 FedAvg" in title(fig)


def test_gap_table_gives_no_verdict_for_a_model_at_chance(three_seeds):
    gap = report_tables.table_gap(three_seeds, 0.05, MODELS)
    # MobileNet-v2: both modes 20/24 in every seed, a gap of 0 <= epsilon, and no verdict on it
    assert gap.iloc[1]["test_gap"] == 0.0
    assert gap.iloc[1]["verdict"] == "not compared: both at chance (all 3 seeds)"
    # ResNet-18: per-seed gaps |0.5 - 0.75|, |0.625 - 0.75|, 0: mean 0.125 > 0.05, but its 95%
    # interval 0.125 +- 4.3027 * 0.125 / sqrt(3) holds 0.05: no verdict either way
    assert gap.iloc[0]["test_gap"] == pytest.approx(0.125)
    assert gap.iloc[0]["test_gap_by_seed"] == "s0 0.250, s1 0.125, s2 0.000"
    assert gap.iloc[0]["verdict"] == "undecided: the 95% interval holds epsilon"
    assert "within epsilon" not in gap["verdict"].tolist()


def test_gap_table_with_one_mode_at_chance(tmp_path):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=MAJORITY)
    write_run(tmp_path, "resnet18", "central", 0, test=[[18, 1, 1], [0, 2, 0], [0, 0, 2]])
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05)
    assert gap["test_gap"].tolist() == pytest.approx([2 / 24])
    assert gap["verdict"].tolist() == ["not compared: FedAvg at chance"]


# ---------------------------------------------------------------- gap and budget


def test_gap_table_is_absolute_difference_against_epsilon(tmp_path):
    # Prepare: resnet18 0.5 vs 13/24; mobilenet_v2 0.75 vs 1.0 (binary-exact or close to it)
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)))
    write_run(tmp_path, "resnet18", "central", 0, test=diagonal((5, 4, 4)))
    write_run(tmp_path, "mobilenet_v2", "fedavg", 0, test=diagonal((6, 6, 6)))
    write_run(tmp_path, "mobilenet_v2", "central", 0, test=diagonal((8, 8, 8)))
    # Execute
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05, MODELS)
    # Assert: |0.5 - 13/24| = 1/24 <= 0.05; |0.75 - 1| = 0.25 > 0.05
    assert list(gap["model"]) == ["ResNet-18", "MobileNet-v2"]
    assert gap["test_gap"].tolist() == pytest.approx([1 / 24, 0.25])
    assert gap["verdict"].tolist() == ["within epsilon", "outside epsilon"]
    assert gap["epsilon"].tolist() == [0.05, 0.05]


def test_gap_table_shows_the_pooled_budget_and_the_ratio_of_sample_passes(tmp_path):
    # FedAvg: 2 rounds of 32 sample passes = 64; pooled: 2 epochs of 80 = 160, i.e. 2.5x
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), rows=history([1.0, 0.5], 32))
    write_run(
        tmp_path,
        "resnet18",
        "central",
        0,
        test=diagonal((4, 4, 4)),
        rows=history([1.0, 0.5], 80),
        pooled_budget="paper",
        rounds=2,
        local_epochs=1,
    )
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05)
    assert gap["pooled_budget"].tolist() == ["paper (R x E = 2 epochs)"]
    assert gap["pooled_to_fedavg_passes"].tolist() == [2.5]
    assert "pooled training made 2.50x FedAvg's sample passes (not an equal-compute comparison)" in gap.attrs["caption"]


def test_gap_table_says_when_the_budgets_are_matched(tmp_path):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), rows=history([1.0, 0.5], 32))
    write_run(
        tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)), rows=history([1.0], 64), pooled_budget="matched"
    )
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05)
    assert gap["pooled_budget"].iloc[0].startswith("matched")
    assert "1.00x FedAvg's sample passes (about equal compute)" in gap.attrs["caption"]


def test_gap_table_pairs_seeds_and_names_missing_runs(tmp_path):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)))
    write_run(tmp_path, "resnet18", "fedavg", 1, test=diagonal((6, 6, 6)))
    write_run(tmp_path, "resnet18", "central", 0, test=diagonal((6, 6, 6)))
    write_run(tmp_path, "mobilenet_v2", "central", 0, test=diagonal((6, 6, 6)))
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05, MODELS, [0, 1])
    assert list(gap["model"]) == ["ResNet-18"] and gap["seeds"].tolist() == [1]  # seed 1 has no pooled run
    assert gap["test_gap"].tolist() == [0.25]
    assert gap.attrs["missing"] == ["resnet18-central (seed 1)", "mobilenet_v2-fedavg", "mobilenet_v2-central (seed 1)"]


# ---------------------------------------------------------------- per label


def test_per_label_table_shows_the_test_split_not_train(tmp_path):
    # Prepare: train and test sensitivities differ in every class
    write_run(tmp_path, "resnet18", "fedavg", 0, train=diagonal((8, 2, 6)), test=diagonal((2, 4, 8)))
    write_run(tmp_path, "mobilenet_v2", "fedavg", 0, train=diagonal((1, 3, 5)), test=diagonal((6, 6, 0)))
    runs = results.find_runs(tmp_path)
    # Execute
    table = report_tables.table3_per_label(runs, ["covidnet_small", *MODELS])
    # Assert
    assert list(table.columns) == ["model", "seeds", "pneumonia", "normal", "COVID-19", "seeds_at_chance"]
    assert list(table["model"]) == ["ResNet-18", "MobileNet-v2"]
    assert table.iloc[0][["pneumonia", "normal", "COVID-19"]].tolist() == [0.25, 0.5, 1.0]
    assert table.iloc[1][["pneumonia", "normal", "COVID-19"]].tolist() == [0.75, 0.75, 0.0]
    assert table.attrs["missing"] == ["covidnet_small-fedavg"]
    assert "test set" in table.attrs["caption"]
    train = report_tables.table3_per_label(runs, MODELS, split="train")
    assert train.iloc[0][["pneumonia", "normal", "COVID-19"]].tolist() == [1.0, 0.25, 0.75]
    fig = figures.fig4_per_label_accuracy(runs, ["covidnet_small", *MODELS])
    assert "covidnet_small-fedavg" in title(fig)
    bars = [round(b.get_height(), 4) for b in fig.axes[0].patches if b.get_height() > 0]
    assert sorted(bars) == [0.25, 0.5, 0.75, 0.75, 1.0]  # test values, not train


def test_fig4_draws_a_dot_per_seed(three_seeds):
    fig = figures.fig4_per_label_accuracy(three_seeds, MODELS)
    dots = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert dots == 2 * 3 * 3  # models x classes x seeds
    assert "dots: seeds" in title(fig)


# ---------------------------------------------------------------- titles


def test_titles_say_data_profile_image_size_and_seeds(three_seeds):
    about = describe.describe_runs(three_seeds)
    assert about == (
        "SYNTHETIC chest X-rays (48 train / 24 test images) · profile smoke · 32×32 px · "
        "mean ± sd over 3 seeds (0, 1, 2)"
    )
    for fig in (
        figures.fig3_fl_loss(three_seeds),
        figures.fig5_fl_vs_pooled_loss(three_seeds),
        figures.fig_confusion(three_seeds),
    ):
        assert about in title(fig)


def test_titles_say_covidx_for_real_data(tmp_path):
    write_run(
        tmp_path,
        "resnet18",
        "fedavg",
        0,
        test=diagonal((4, 4, 4)),
        description="COVIDx (13892 train / 1579 test images)",
        profile="paper",
        image_size=224,
    )
    about = describe.describe_runs(results.find_runs(tmp_path))
    assert about == "COVIDx (13892 train / 1579 test images) · profile paper · 224×224 px · 1 seed (seed 0)"


def test_seeds_phrase_names_uneven_seed_counts(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, "resnet18", "fedavg", seed, test=diagonal((4, 4, 4)))
    write_run(tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)))
    assert (
        describe.seeds_phrase(results.find_runs(tmp_path))
        == "mean ± sd over 1 to 3 seeds per model and mode (seeds 0, 1, 2; 1 seed: no sd)"
    )


def test_figures_and_tables_refuse_runs_of_two_data_sets(tmp_path):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), fingerprint="aaaa")
    write_run(tmp_path, "resnet18", "fedavg", 1, test=diagonal((4, 4, 4)), fingerprint="bbbb")
    runs = results.find_runs(tmp_path)
    with pytest.raises(UserError, match="data_fingerprint"):
        report_tables.table2_fl_accuracy(runs)
    with pytest.raises(UserError, match="data_fingerprint"):
        figures.fig3_fl_loss(runs)


# ---------------------------------------------------------------- figures


def test_fig5_plots_both_modes_against_sample_passes(tmp_path):
    # FedAvg: E = 3 local epochs, 40 sample passes a round (epochs 3, 6); pooled: 80 an epoch, 6 epochs
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), rows=history([1.0, 0.5], 40, local_epochs=3))
    write_run(
        tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)), rows=history([1.2, 1.0, 0.8, 0.6, 0.5, 0.4], 80)
    )
    fig = figures.fig5_fl_vs_pooled_loss(results.find_runs(tmp_path), MODELS)
    lines = lines_by_gid(fig)
    assert lines["resnet18-fedavg-seed0"] == [40, 80]  # not epochs 3, 6
    assert lines["resnet18-central-seed0"] == [80, 160, 240, 320, 400, 480]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training images processed (sample passes)"
    assert "pooled/FedAvg passes 6.00x" in ax.get_title()  # 480 / 80
    assert "equal x is equal compute" in title(fig)
    assert "mobilenet_v2-fedavg" in title(fig) and "mobilenet_v2-central" in title(fig)


def test_fig3_draws_each_seed_and_their_mean(three_seeds):
    fig = figures.fig3_fl_loss(three_seeds, MODELS)
    ax = fig.axes[0]
    gids = {line.get_gid(): line for line in ax.get_lines()}
    assert {"resnet18-fedavg-seed0", "resnet18-fedavg-seed1", "resnet18-fedavg-seed2", "resnet18-fedavg-mean"} <= set(
        gids
    )
    assert list(gids["resnet18-fedavg-mean"].get_ydata()) == pytest.approx([1.0, 0.6, 0.5, 0.4])
    assert ax.get_xlabel() == "federated round"


def test_confusion_sums_seeds_and_gives_accuracy_mean_and_sd(three_seeds):
    fig = figures.fig_confusion(three_seeds, MODELS)
    assert fig.axes[0].get_title() == "ResNet-18 (accuracy 0.625 ± 0.125)"
    assert "3/3 at chance" in fig.axes[1].get_title()
    cells = [int(t.get_text()) for t in fig.axes[0].texts]
    assert cells[:3] == [16, 8, 0]  # pneumonia row: 4 + 6 + 6 right, 4 + 2 + 2 called normal


@pytest.mark.parametrize("models", [None, ["resnet18", "mobilenet_v2", "resnext50_32x4d"]])
def test_figures_do_not_crash_on_missing_or_no_runs(tmp_path, models):
    write_run(tmp_path, "mobilenet_v2", "fedavg", 0, test=diagonal((4, 4, 4)))
    for runs in (results.find_runs(tmp_path), []):
        figs = [
            figures.fig_confusion(runs, models),
            figures.fig4_per_label_accuracy(runs, models),
            figures.fig3_fl_loss(runs, models),
            figures.fig5_fl_vs_pooled_loss(runs, models),
        ]
        tables = [
            report_tables.table2_fl_accuracy(runs, models),
            report_tables.table3_per_label(runs, models),
            report_tables.table4_pooled_accuracy(runs, models),
            report_tables.table_gap(runs, 0.05, models),
        ]
        if models:
            assert all("resnet18-fedavg" in title(f) for f in figs)
            assert all(t.attrs["missing"] for t in tables)
        if not runs:
            assert all("no finished runs" in title(f) for f in figs)
            assert all(len(t) == 0 for t in tables)


# ---------------------------------------------------------------- saving


def test_save_figure_and_table_write_complete_files(tmp_path, three_seeds):
    fig = figures.fig3_fl_loss(three_seeds)
    table = report_tables.table2_fl_accuracy(three_seeds)
    paths = report_io.save_figure(fig, tmp_path / "figures", "fig3") + report_io.save_table(
        table, tmp_path / "figures", "t2"
    )
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "fig3.pdf",
        "fig3.png",
        "t2.csv",
        "t2.md",
        "t2_per_seed.csv",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "figures" / "fig3.png") as img:
        img.verify()
    md = (tmp_path / "figures" / "t2.md").read_text()
    assert md.startswith("Table 2.") and "| ResNet-18 | 3 | 1000 |" in md
    assert pd.read_csv(tmp_path / "figures" / "t2.csv")["test_accuracy"].tolist() == pytest.approx([0.625, 20 / 24])


def test_markdown_shows_nan_as_a_dash():
    df = pd.DataFrame({"model": ["A"], "acc": [float("nan")], "acc_sd": [0.1]})
    assert report_io.markdown_table(df).splitlines()[-1] == "| A | – |"


@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_write_figure_is_byte_stable(tmp_path, monkeypatch, ext):
    def draw():
        fig = figures.Figure()
        fig.subplots().plot([1, 2, 3], [3, 1, 2], label="x")
        fig.suptitle("loss ± sd")
        return fig

    # Two writes a day apart (matplotlib dates PDFs from SOURCE_DATE_EPOCH when set, else now)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    first = report_io.write_figure(draw(), tmp_path / f"a.{ext}").read_bytes()
    plain = io.BytesIO()
    draw().savefig(plain, format=ext)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    second = report_io.write_figure(draw(), tmp_path / f"b.{ext}").read_bytes()
    assert first == second
    if ext == "pdf":  # the test can fail: matplotlib's own default is not stable
        later = io.BytesIO()
        draw().savefig(later, format=ext)
        assert plain.getvalue() != later.getvalue()
    assert np.frombuffer(first, np.uint8).size > 0


def test_fig5_mean_of_seeds_is_taken_per_round_not_per_x_value(tmp_path):
    # FedAvg seeds sample other clients: 30, 32 and 34 sample passes a round
    for seed, passes in zip((0, 1, 2), (30, 32, 34), strict=True):
        write_run(tmp_path, "resnet18", "fedavg", seed, test=diagonal((4, 4, 4)), rows=history([1.0, 0.6, 0.4], passes))
    fig = figures.fig5_fl_vs_pooled_loss(results.find_runs(tmp_path), ["resnet18"])
    mean = next(line for line in fig.axes[0].get_lines() if line.get_gid() == "resnet18-fedavg-mean")
    # one point per round at the seeds' mean x; a mean per x value would give 9 points
    assert list(mean.get_xdata()) == pytest.approx([32, 64, 96])
    assert list(mean.get_ydata()) == pytest.approx([1.0, 0.6, 0.4])
    assert "mean ± sd of 3 seeds" in mean.get_label()
    assert fig.axes[0].collections  # the ± sd band


def test_fig4_whiskers_are_the_clipped_t_interval(three_seeds):
    fig = figures.fig4_per_label_accuracy(three_seeds, MODELS)
    ax = fig.axes[0]
    # each whisker (with its caps) is one line; its y values are the interval's ends
    ends = [(np.nanmin(line.get_ydata()), np.nanmax(line.get_ydata())) for line in ax.get_lines()]
    assert ends and max(high for _, high in ends) <= 1.0
    # ResNet-18's COVID-19 sensitivity over seeds 4/8, 5/8, 6/8: mean 0.625, half-width 4.3027 * 0.125 / sqrt(3)
    half = 4.302653 * 0.125 / math.sqrt(3)
    assert any(end == pytest.approx((0.625 - half, 0.625 + half)) for end in ends)
    # pneumonia 4/8, 6/8, 6/8: the interval would reach 1.03, and stops at 1
    assert any(low < 0.5 and high == 1.0 for low, high in ends)
    assert "95% t-interval" in title(fig)


def test_gap_verdict_over_seeds_reads_the_interval(tmp_path):
    # every seed: FedAvg 12/24, pooled 18/24 (gap 0.25, sd 0: interval [0.25, 0.25]); MobileNet-v2: 18/24 both
    for seed in (0, 1, 2):
        write_run(tmp_path, "resnet18", "fedavg", seed, test=diagonal((4, 4, 4)))
        write_run(tmp_path, "resnet18", "central", seed, test=diagonal((6, 6, 6)))
        write_run(tmp_path, "mobilenet_v2", "fedavg", seed, test=diagonal((6, 6, 6)))
        write_run(tmp_path, "mobilenet_v2", "central", seed, test=diagonal((6, 6, 6)))
    gap = report_tables.table_gap(results.find_runs(tmp_path), 0.05, MODELS)
    assert gap["verdict"].tolist() == ["outside epsilon", "within epsilon"]
    assert "95% interval of the mean gap" in gap.attrs["caption"]
