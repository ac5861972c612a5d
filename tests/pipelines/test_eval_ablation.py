import argparse

from xmkd.pipelines import eval_ablation


def block(top1: float, std: float) -> dict:
    return {"mean": {"video_top1": top1, "clip_top1": top1}, "std": {"video_top1": std, "clip_top1": std}}


def test_table_marks_a_skipped_protocol_and_reads_mean_std():
    rows = [
        {"name": "random init", "svm": None, "finetune": block(0.523, 0.046)},
        {"name": "XKD", "svm": block(0.435, 0.027), "finetune": None},
    ]
    lines = eval_ablation.markdown_table(rows).splitlines()
    assert lines[2] == "| random init | - | - | 52.3 ± 4.6 | 52.3 ± 4.6 |"
    assert lines[3] == "| XKD | 43.5 ± 2.7 | 43.5 ± 2.7 | - | - |"


def test_fine_tuning_arguments_pass_through_after_a_bare_dash_dash():
    parser = argparse.ArgumentParser()
    eval_ablation.add_arguments(parser)
    args = parser.parse_args(["--skip-svm", "--folds", "1", "--", "--model.init_args.layer_decay", "1.0"])
    assert args.skip_svm and args.folds == [1]
    assert args.extra == ["--", "--model.init_args.layer_decay", "1.0"]
