"""fedlib.plots on tiny hand-built run results: the arithmetic of the tables,
what titles say, and that missing runs are named instead of crashing."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from fedlib import plots

CLASSES = ["pneumonia", "normal", "COVID-19"]
ABOUT = "SYNTHETIC chest X-rays (48 train / 24 test images) · profile smoke · seed 0"


def make_final(model: str, mode: str, train_acc: float, test_acc: float, sens=(0.5, 0.25, 1.0),
               synthetic: bool = True, params: int = 1000) -> dict:
    def split(acc):
        metrics = {"accuracy": acc, "balanced_accuracy": acc, "loss": 1.0, "n": 24,
                   "confusion": [[4, 2, 2], [1, 6, 1], [0, 0, 8]]}
        metrics.update({f"sensitivity_{k}": s for k, s in zip(("pneumonia", "normal", "covid19"), sens, strict=True)})
        return metrics

    kind = "SYNTHETIC chest X-rays" if synthetic else "COVIDx"
    return {"model": model, "mode": mode, "profile": "smoke", "seed": 0, "synthetic": synthetic,
            "data_description": f"{kind} (48 train / 24 test images)", "classes": CLASSES,
            "params": params, "train": split(train_acc), "test": split(test_acc)}


def make_history(losses, local_epochs: int = 1) -> pd.DataFrame:
    rounds = range(1, len(losses) + 1)
    return pd.DataFrame({"round": list(rounds), "epoch": [r * local_epochs for r in rounds],
                         "train_loss": losses, "test_accuracy": [0.5] * len(losses)})


def write_run(runs_dir, final: dict, history: pd.DataFrame | None = None):
    run = runs_dir / f"{final['model']}-{final['mode']}"
    run.mkdir(parents=True)
    (run / "final.json").write_text(json.dumps(final))
    (history if history is not None else make_history([1.0, 0.5])).to_csv(run / "history.csv", index=False)
    return run


def title(fig) -> str:
    return fig._suptitle.get_text()


def test_gap_table_is_absolute_difference_against_epsilon():
    # Prepare: binary-exact accuracies, so the expected gaps are exact too
    fed = {"resnet18": make_final("resnet18", "fedavg", 0.75, 0.5),
           "mobilenet_v2": make_final("mobilenet_v2", "fedavg", 0.875, 0.75)}
    pooled = {"resnet18": make_final("resnet18", "central", 1.0, 0.5625),
              "mobilenet_v2": make_final("mobilenet_v2", "central", 0.75, 0.875)}
    # Execute
    gap = plots.table_gap(fed, pooled, 0.1, ABOUT, ["resnet18", "mobilenet_v2"])
    # Assert: |0.5 - 0.5625| = 0.0625 <= 0.1; |0.75 - 0.875| = 0.125 > 0.1
    assert list(gap["model"]) == ["ResNet-18", "MobileNet-v2"]
    assert list(gap["test_gap"]) == [0.0625, 0.125]
    assert list(gap["train_gap"]) == [0.25, 0.125]
    assert list(gap["test_within_epsilon"]) == [True, False]
    assert list(gap["epsilon"]) == [0.1, 0.1]


def test_gap_table_names_models_without_both_runs():
    fed = {"resnet18": make_final("resnet18", "fedavg", 0.75, 0.5)}
    pooled = {"resnet18": make_final("resnet18", "central", 1.0, 0.5625),
              "mobilenet_v2": make_final("mobilenet_v2", "central", 0.75, 0.875)}
    gap = plots.table_gap(fed, pooled, 0.05, ABOUT, ["resnet18", "mobilenet_v2"])
    assert list(gap["model"]) == ["ResNet-18"]
    assert "mobilenet_v2-fedavg" in gap.attrs["caption"]


def test_per_label_table_has_one_row_per_model_and_the_three_classes():
    fed = {"resnet18": make_final("resnet18", "fedavg", 0.75, 0.5, sens=(0.125, 0.5, 1.0)),
           "mobilenet_v2": make_final("mobilenet_v2", "fedavg", 0.75, 0.5, sens=(0.25, 0.75, 0.0))}
    table = plots.table3_per_label(fed, ABOUT, ["covidnet_small", "resnet18", "mobilenet_v2"])
    assert list(table.columns) == ["model", *CLASSES]
    assert list(table["model"]) == ["ResNet-18", "MobileNet-v2"]
    assert table.iloc[0, 1:].tolist() == [0.125, 0.5, 1.0]
    assert table.iloc[1, 1:].tolist() == [0.25, 0.75, 0.0]
    assert table.attrs["missing"] == ["covidnet_small-fedavg"]
    fig = plots.fig4_per_label_accuracy(table, ABOUT)
    assert "covidnet_small-fedavg" in title(fig)


def test_accuracy_tables_copy_final_json():
    fed = {"resnet18": make_final("resnet18", "fedavg", 0.75, 0.5, params=11_000_000)}
    pooled = {"resnet18": make_final("resnet18", "central", 1.0, 0.625)}
    t2 = plots.table2_fl_accuracy(fed, ABOUT, ["resnet18"])
    t4 = plots.table4_pooled_accuracy(pooled, ABOUT, ["resnet18"])
    assert t2.iloc[0].to_dict() == {"model": "ResNet-18", "params": 11_000_000, "params_millions": 11.0,
                                    "train_accuracy": 0.75, "test_accuracy": 0.5}
    assert t4.iloc[0].to_dict() == {"model": "ResNet-18", "train_accuracy": 1.0, "test_accuracy": 0.625}


def test_titles_say_synthetic_when_the_runs_are(tmp_path):
    write_run(tmp_path, make_final("resnet18", "fedavg", 0.75, 0.5))
    write_run(tmp_path, make_final("resnet18", "central", 0.75, 0.5))
    about = plots.describe_runs(tmp_path, ["resnet18"], profile="quick", seed=3, data="synthetic")
    # final.json decides, not the parameters: profile smoke, seed 0
    assert "synthetic" in about.lower() and "profile smoke" in about and "seed 0" in about
    fed = plots.load_histories(tmp_path, ["resnet18"], "fedavg")
    pooled = plots.load_histories(tmp_path, ["resnet18"], "central")
    finals = plots.load_finals(tmp_path, ["resnet18"], "fedavg")
    for fig in (plots.fig3_fl_loss(fed, about), plots.fig5_fl_vs_pooled_loss(fed, pooled, about),
                plots.fig_confusion(finals, about)):
        assert "synthetic" in title(fig).lower()


def test_titles_say_covidx_for_real_data(tmp_path):
    write_run(tmp_path, make_final("resnet18", "fedavg", 0.75, 0.5, synthetic=False))
    about = plots.describe_runs(tmp_path, ["resnet18"], profile="paper", seed=0, data=str(tmp_path))
    assert "COVIDx" in about and "synthetic" not in about.lower()


def test_without_runs_the_title_falls_back_to_the_parameters(tmp_path):
    about = plots.describe_runs(tmp_path, ["resnet18"], profile="quick", seed=7, data="synthetic")
    assert "synthetic" in about.lower() and "seed 7" in about and "no finished runs" in about
    fig = plots.fig3_fl_loss({}, about, ["resnet18"])
    assert "resnet18-fedavg" in title(fig)


def test_unfinished_runs_are_left_out(tmp_path):
    run = write_run(tmp_path, make_final("resnet18", "fedavg", 0.75, 0.5))
    (run / "final.json").unlink()  # still training
    assert plots.load_finals(tmp_path, ["resnet18"], "fedavg") == {}
    assert plots.load_histories(tmp_path, ["resnet18"], "fedavg") == {}


def test_fig5_puts_rounds_at_epoch_r_times_e(tmp_path):
    fed = {"resnet18": make_history([1.0, 0.5], local_epochs=3)}
    pooled = {"resnet18": make_history([1.2, 1.0, 0.8, 0.6, 0.5, 0.4])}
    fig = plots.fig5_fl_vs_pooled_loss(fed, pooled, ABOUT, ["resnet18", "mobilenet_v2"])
    ax = fig.axes[0]
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert lines["FedAvg"] == [3, 6]
    assert lines["pooled"] == [1, 2, 3, 4, 5, 6]
    assert "mobilenet_v2-fedavg" in title(fig) and "mobilenet_v2-central" in title(fig)


def test_save_figure_and_table_write_complete_files(tmp_path):
    fig = plots.fig3_fl_loss({"resnet18": make_history([1.0, 0.5])}, ABOUT)
    table = plots.table2_fl_accuracy({"resnet18": make_final("resnet18", "fedavg", 0.75, float("nan"))}, ABOUT)
    paths = plots.save_figure(fig, tmp_path / "figures", "fig3") + plots.save_table(table, tmp_path / "figures", "t2")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["fig3.pdf", "fig3.png", "t2.csv", "t2.md"]
    assert all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "figures" / "fig3.png") as img:
        img.verify()
    md = (tmp_path / "figures" / "t2.md").read_text()
    assert md.startswith("Table 2.") and "| ResNet-18 | 1000 |" in md and "| – |" in md
    assert pd.read_csv(tmp_path / "figures" / "t2.csv")["train_accuracy"].tolist() == [0.75]


@pytest.mark.parametrize("models", [[], ["resnet18", "mobilenet_v2", "resnext50_32x4d"]])
def test_figures_do_not_crash_on_missing_models(models):
    finals = {"mobilenet_v2": make_final("mobilenet_v2", "fedavg", 0.75, 0.5)} if models else {}
    fig = plots.fig_confusion(finals, ABOUT, models or None)
    table = plots.table3_per_label(finals, ABOUT, models or None)
    plots.fig4_per_label_accuracy(table, ABOUT)
    plots.fig5_fl_vs_pooled_loss({}, {}, ABOUT, models or None)
    if models:
        assert "resnet18-fedavg" in title(fig)
