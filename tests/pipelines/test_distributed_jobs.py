"""Real data-parallel jobs on the CPU (gloo, 2 processes, torchrun on localhost): training, resume, failures, segment.

Each worker runs ``medseg.cli.main`` under a small wrapper that records, with a Python audit hook, every file
it creates, opens for writing, renames or removes under a watched folder, and its exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.config import TrainConfig
from medseg.pipelines.checkpoint import load_checkpoint
from medseg.pipelines.model_folder import load_model_folder
from medseg.pipelines.train import train

WORKER = textwrap.dedent(
    '''
    import contextlib, json, os, sys, time

    report_dir, watched = sys.argv[1], os.path.realpath(sys.argv[2])
    rank = int(os.environ["RANK"])
    writes = []

    def inside(path):
        if isinstance(path, int):
            return None
        full = os.path.realpath(os.fsdecode(os.fspath(path)))
        return full if full == watched or full.startswith(watched + os.sep) else None

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if mode is not None else flags & (os.O_WRONLY | os.O_RDWR)
            target = inside(path) if writing else None
        elif event == "os.rename":
            target = inside(args[1])
        elif event in ("os.mkdir", "os.remove", "os.rmdir"):
            target = inside(args[0])
        else:
            return
        if target is not None:
            writes.append([event, os.path.relpath(target, watched)])

    sys.addaudithook(hook)
    from medseg.cli import main

    code = 1
    try:
        with open(os.path.join(report_dir, f"rank{rank}.out"), "w", encoding="utf-8") as out, contextlib.redirect_stdout(out):
            code = main(sys.argv[3:])
    finally:
        with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as handle:
            json.dump({"exit_code": code, "writes": writes, "time": time.time()}, handle)
    sys.exit(code)
    '''
)
LAUNCH_LIMIT_S = 300


def _launch(tmp: Path, watched: Path, medseg_args: list[str], report: str) -> tuple[int, Path, float]:
    """Run 2 workers under torchrun; return (exit code, report folder, time it exited)."""
    reports = tmp / report
    reports.mkdir()
    script = tmp / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(script), str(reports), str(watched), *medseg_args]
    done = subprocess.run(command, cwd=tmp, capture_output=True, encoding="utf-8", errors="replace", timeout=LAUNCH_LIMIT_S)
    ended = time.time()
    (reports / "launcher.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    return done.returncode, reports, ended


def _report(reports: Path, rank: int) -> dict:
    path = reports / f"rank{rank}.json"
    assert path.is_file(), (reports / "launcher.log").read_text(encoding="utf-8")[-3000:]
    return json.loads(path.read_text())


def _model_difference(a: Path, b: Path) -> float:
    ta, _ = load_checkpoint(a)
    tb, _ = load_checkpoint(b)
    keys = [k for k in ta if k.startswith("model.")]
    assert keys and set(keys) == {k for k in tb if k.startswith("model.")}
    return max(float((ta[k].double() - tb[k].double()).abs().max()) for k in keys)


# SGD: AdamW turns rounding noise in gradients that are zero in exact arithmetic (a convolution bias before
# instance normalisation) into updates of about lr, whatever the number of processes (docs/distributed.md).
CONFIG = TrainConfig(model="unet", variant="tiny", epochs=2, steps_per_epoch=2, batch_size=2, patch_size=[16, 16, 16],
                     optimizer="sgd", n_folds=2, num_workers=0, deterministic=True, device="cpu", progress=False)
# The same on the command line (6 cases, 2 folds: 3 training and 3 validation cases, both odd).
CLI = ["--model", "unet", "--variant", "tiny", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
       "--patch", "16", "16", "16", "--optimizer", "sgd", "--n-folds", "2", "--num-workers", "0", "--deterministic",
       "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process for 2 steps (then resumed to the end), and the same 2 steps in 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "brats"
    assert main(["synth", "brats", str(data), "--cases", "6", "--shape", "32", "32", "24", "--seed", "0"]) == 0
    single = root / "single"
    train(data, single, TrainConfig(**{**CONFIG.to_dict(), "max_steps": 2}))
    shutil.copytree(single, root / "single_at_2")
    train(data, single, CONFIG, resume=True)
    ddp = root / "ddp"
    args = ["train", str(data), "--output", str(ddp), *CLI, "--max-steps", "2"]
    code, reports, _ = _launch(root, ddp, args, "ddp_reports")
    return {"root": root, "data": data, "single": single, "single_at_2": root / "single_at_2", "ddp": ddp,
            "ddp_code": code, "reports": reports}


def test_two_processes_with_one_sample_each_match_one_process_with_two(runs):
    assert runs["ddp_code"] == 0, (runs["reports"] / "launcher.log").read_text(encoding="utf-8")[-3000:]
    ddp, single = runs["ddp"], runs["single_at_2"]
    assert _model_difference(ddp / "checkpoint_last", single / "checkpoint_last") < 1e-5
    _, state = load_checkpoint(ddp / "checkpoint_last")
    assert state["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 2, "steps_per_epoch": 2}
    # The loss is the global batch's; validation Dice (3 cases sharded 2 + 1, gathered) is the same.
    ours = json.loads((ddp / "metrics.jsonl").read_text())
    theirs = json.loads((single / "metrics.jsonl").read_text())
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
    assert ours["val_dice"] == pytest.approx(theirs["val_dice"], abs=1e-6)
    assert json.loads((ddp / "run.json").read_text())["processes"] == 2
    assert len(json.loads((ddp / "run.json").read_text())["val_cases"]) % 2 == 1
    load_model_folder(ddp / "model")  # plain parameter names (no DDP "module." prefix): it loads
    out = (runs["reports"] / "rank0.out").read_text(encoding="utf-8")
    assert "stopped after 2 steps" in out and (runs["reports"] / "rank1.out").read_text(encoding="utf-8") == ""


def test_only_rank_zero_writes_into_the_run_folder(runs):
    rank0, rank1 = _report(runs["reports"], 0), _report(runs["reports"], 1)
    assert rank0["exit_code"] == rank1["exit_code"] == 0
    assert rank1["writes"] == []
    written = {path.split(os.sep)[0] for _, path in rank0["writes"]}
    assert {"config.yaml", "run.json", "metrics.jsonl", "checkpoint_last", "model"} <= written
    assert sorted(p.name for p in runs["ddp"].iterdir()) == sorted(p.name for p in runs["single_at_2"].iterdir())


def test_resume_with_another_number_of_processes_continues_the_same_run(runs, tmp_path):
    # 2 processes -> 1: the in-process resume of the 2-process checkpoint.
    two_to_one = tmp_path / "two_to_one"
    shutil.copytree(runs["ddp"], two_to_one)
    result = train(runs["data"], two_to_one, CONFIG, resume=True)
    assert result.global_step == 4
    assert _model_difference(two_to_one / "checkpoint_last", runs["single"] / "checkpoint_last") < 1e-5
    # 1 process -> 2, with the --nproc launcher of `medseg train`.
    one_to_two = tmp_path / "one_to_two"
    shutil.copytree(runs["single_at_2"], one_to_two)
    done = subprocess.run(
        [sys.executable, "-m", "medseg", "train", str(runs["data"]), "--output", str(one_to_two), "--resume",
         "--nproc", "2"],
        capture_output=True, encoding="utf-8", errors="replace", timeout=LAUNCH_LIMIT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 2 epoch(s), 4 steps" in done.stdout and done.stdout.count("trained") == 1
    assert _model_difference(one_to_two / "checkpoint_last", runs["single"] / "checkpoint_last") < 1e-5
    records = [json.loads(line) for line in (one_to_two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def test_a_rank_that_fails_ends_the_whole_job_nonzero_within_60_seconds(runs, tmp_path):
    from medseg.pipelines.sampler import PatchSampler
    from medseg.pipelines.train_data import prepare_training_data

    data = tmp_path / "brats"
    shutil.copytree(runs["data"], data)
    cases = prepare_training_data(data, CONFIG).train_cases
    sampler = PatchSampler(len(cases), 2, 2, CONFIG.seed)
    rank0_case = cases[sampler.case_index(0, sampler.position(0, 0, shard=0, num_shards=2))]
    rank1_case = cases[sampler.case_index(0, sampler.position(0, 0, shard=1, num_shards=2))]
    assert rank0_case["case_id"] != rank1_case["case_id"]
    # Only rank 1 reads this case in the first step: it fails while rank 0 waits for it in a collective.
    for path in [*rank1_case["image"], rank1_case["label"]]:
        Path(path).write_bytes(b"not a NIfTI file")
    run = tmp_path / "run"
    code, reports, ended = _launch(tmp_path, run, ["train", str(data), "--output", str(run), *CLI], "fail")
    assert code != 0
    failed = _report(reports, 1)
    assert failed["exit_code"] != 0
    assert ended - failed["time"] < 60, "the other rank was not stopped in time"
    # Rank 0 was waiting for rank 1 in a collective: it failed too (peer gone) or torchrun stopped it.
    assert not (reports / "rank0.json").exists() or _report(reports, 0)["exit_code"] != 0
    assert not (run / "checkpoint_last").exists()


TIMEOUT_WORKER = textwrap.dedent(
    """
    import sys, time
    from medseg.pipelines.distributed import distributed_session
    with distributed_session("gloo", timeout_s=3) as context:
        print("joined", time.time(), flush=True)
        if context.rank == 1:
            time.sleep(60)  # stuck: never joins the collective
        context.all_reduce_sum([1.0])
    """
)


def test_a_process_whose_peer_stops_answering_fails_after_the_group_timeout(tmp_path):
    with socket.socket() as probe:  # a free port on 127.0.0.1 for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    workers = [
        subprocess.Popen([sys.executable, "-c", TIMEOUT_WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         encoding="utf-8", errors="replace", env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2"})
        for r in range(2)
    ]
    try:
        out, err = workers[0].communicate(timeout=LAUNCH_LIMIT_S)
        ended = time.time()
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()
    assert workers[0].returncode != 0
    joined = float(out.split()[1])
    assert ended - joined < 30, err[-2000:]
    assert "timed out" in err.lower() or "timeout" in err.lower(), err[-2000:]


def test_sharded_segmentation_writes_every_case_once_and_every_rank_counts_all_failures(runs, tmp_path):
    cases = tmp_path / "cases"
    source = sorted(p for p in runs["data"].iterdir() if p.is_dir())[:5]  # an odd number of cases
    for folder in source:
        (cases / folder.name).mkdir(parents=True)
        for image in folder.glob("*.nii.gz"):
            if not image.name.endswith("_seg.nii.gz"):
                shutil.copy(image, cases / folder.name / image.name)
    broken = source[3].name  # rank 1 takes cases 1 and 3
    for image in (cases / broken).iterdir():
        image.write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    args = ["segment", str(cases), "--model", str(runs["single"] / "model"), "--output", str(out), "--device", "cpu"]
    code, reports, _ = _launch(tmp_path, out, args, "segment")

    assert code != 0
    outputs = {}
    for rank in (0, 1):
        report = _report(reports, rank)
        assert report["exit_code"] == 1, (reports / "launcher.log").read_text(encoding="utf-8")[-3000:]
        for event, path in report["writes"]:
            if event == "os.rename":
                outputs.setdefault(path, []).append(rank)
    expected = {f"{folder.name}.nii.gz": [index % 2] for index, folder in enumerate(source) if folder.name != broken}
    assert outputs == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    summary = (reports / "rank0.out").read_text(encoding="utf-8")
    assert "segmented 4 of 5 cases" in summary
    assert all(folder.name in summary for folder in source if folder.name != broken)
    assert (reports / "rank1.out").read_text(encoding="utf-8") == ""
