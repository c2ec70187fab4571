"""Sharding, launch environment, worker arguments and the global-batch loss of data-parallel runs, in one process."""

from __future__ import annotations

import argparse
import datetime
import math

import pytest
import torch

from medseg.errors import ConfigError
from medseg.pipelines.distributed import (
    DistributedContext,
    LaunchEnvironment,
    backend_for_device,
    distributed_session,
    interleave,
    launch_environment,
)
from medseg.pipelines.losses import SegmentationLoss
from medseg.pipelines.sampler import EpochSamples, PatchSampler


@pytest.mark.parametrize("n_items", [0, 1, 2, 5, 7])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_cover_every_item_once_and_interleave_restores_the_order(n_items, world_size):
    items = [f"case{i}" for i in range(n_items)]
    shards = [DistributedContext(rank, world_size).shard(items) for rank in range(world_size)]
    assert sorted(sum(shards, [])) == sorted(items)
    assert all(shard == items[rank::world_size] for rank, shard in enumerate(shards))
    assert interleave(shards) == items


def test_interleave_refuses_shards_that_sharding_cannot_produce():
    with pytest.raises(ValueError, match="shard lengths"):
        interleave([["a"], ["b", "c"]])


def test_launch_environment_reads_torchruns_variables():
    assert launch_environment({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert launch_environment(env) == LaunchEnvironment(rank=3, world_size=4, local_rank=1, local_world_size=2)
    with pytest.raises(ConfigError, match="inconsistent"):
        launch_environment({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="not integers"):
        launch_environment({"RANK": "x", "WORLD_SIZE": "2"})


def test_backend_follows_the_device():
    assert backend_for_device("cpu") == "gloo"
    assert backend_for_device("cuda") == "nccl" and backend_for_device("cuda:1") == "nccl"
    assert backend_for_device("auto") == ("nccl" if torch.cuda.is_available() else "gloo")


def test_session_is_a_single_process_outside_torchrun_and_checks_its_options():
    single = LaunchEnvironment(rank=0, world_size=1, local_rank=0, local_world_size=1)
    with distributed_session("gloo", launch=single) as context:
        assert context is None
    with pytest.raises(ConfigError, match="nccl"):
        with distributed_session("mpi", launch=single):
            pass
    with pytest.raises(ConfigError, match="timeout"):
        with distributed_session("gloo", timeout_s=0, launch=single):
            pass


def test_collectives_round_trip_json_exactly_in_a_one_process_group(tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        context = DistributedContext(rank=0, world_size=1)
        value = [{"TC": 0.1 + 0.2, "WT": math.nan, "name": "fälle/ü"}, {"ET": 1e-300}]
        (back,) = context.all_gather_json(value)
        assert back[0]["TC"] == 0.1 + 0.2 and math.isnan(back[0]["WT"]) and back[0]["name"] == "fälle/ü"
        assert back[1] == {"ET": 1e-300}
        assert context.all_reduce_sum([1.5, math.inf]) == [1.5, math.inf]
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        total = context.global_batch_sum(x)
        total.sum().backward()
        assert torch.equal(total.detach(), x.detach()) and torch.equal(x.grad, torch.ones(2))
        context.barrier()
    finally:
        dist.destroy_process_group()


def test_epoch_samples_of_all_shards_form_the_single_process_batches():
    class Recorder:
        def set_random_state(self, seed):
            self.seed = seed

        def __call__(self, item):
            return (item["case"], self.seed)

    sampler = PatchSampler(n_cases=3, batch_size=4, steps_per_epoch=3, seed=7)
    single = EpochSamples(sampler, 1, 1, lambda i: {"case": i}, Recorder())
    single_batches = [[single[k] for k in range(s * 4, s * 4 + 4)] for s in range(2)]
    for world_size in (2, 4):
        shards = [
            EpochSamples(sampler, 1, 1, lambda i: {"case": i}, Recorder(), shard=r, num_shards=world_size)
            for r in range(world_size)
        ]
        local = 4 // world_size
        assert all(len(shard) == 2 * local for shard in shards)
        for step in range(2):
            joined = [shard[k] for shard in shards for k in range(step * local, step * local + local)]
            assert joined == single_batches[step]


def test_a_batch_that_cannot_be_split_evenly_is_a_config_error():
    sampler = PatchSampler(n_cases=3, batch_size=3, steps_per_epoch=1, seed=0)
    with pytest.raises(ConfigError, match="multiple of 2"):
        sampler.local_batch_size(2)


def test_step_seed_of_rank_zero_is_the_single_process_seed_and_other_ranks_differ():
    sampler = PatchSampler(n_cases=3, batch_size=2, steps_per_epoch=2, seed=5)
    assert sampler.step_seed(1, 1) == sampler.step_seed(1, 1, 0)
    assert len({sampler.step_seed(1, 1, r) for r in range(3)}) == 3


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_batch_dice_with_the_other_halfs_sums_equals_the_dice_of_the_whole_batch(activation):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=generator)
    if activation == "softmax":
        target = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=generator)
    else:
        target = (torch.rand(2, 3, 6, 5, 4, generator=generator) > 0.5).float()
    whole = SegmentationLoss(activation, dice_weight=1.0, ce_weight=0.0)(logits, target)

    def sums(part_logits, part_target):
        recorded = []
        SegmentationLoss(activation, ce_weight=0.0, batch_sum=lambda t: recorded.append(t) or t)(
            part_logits, part_target
        )
        return recorded[0].detach()

    other = sums(logits[1:], target[1:])
    first = SegmentationLoss(activation, ce_weight=0.0, batch_sum=lambda t: t + other)(logits[:1], target[:1])
    assert torch.allclose(first, whole, rtol=1e-6, atol=1e-7)


def _train_parser() -> argparse.ArgumentParser:
    from medseg.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_worker_arguments_reproduce_every_train_option_except_nproc():
    from medseg.cli.train import worker_arguments

    parser = _train_parser()
    argv = ["train", "data dir", "--output", "runs/x", "--config", "c.yaml", "--model", "unet", "--variant", "tiny",
            "--epochs", "3", "--steps-per-epoch", "4", "--patch", "16", "16", "8", "--batch-size", "4",
            "--lr", "0.0003", "--optimizer", "sgd", "--fold", "1", "--n-folds", "3", "--val-interval", "2",
            "--seed", "9", "--deterministic", "--no-amp", "--device", "cpu", "--num-workers", "0", "--max-steps", "5",
            "--max-minutes", "2.5", "--no-progress", "--dist-timeout", "30.5", "--nproc", "2"]
    args = parser.parse_args(argv)
    again = parser.parse_args(worker_arguments(args))
    expected = {**vars(args), "nproc": None}
    assert vars(again) == expected
    # Every option of the parser was given above, so none can be silently dropped for the workers.
    train_parser = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - test introspection
    dests = {action.dest for action in train_parser._actions if action.dest != "help"}  # noqa: SLF001
    assert dests <= set(vars(args))
    assert all(vars(args)[d] is not None for d in dests - {"resume"})

    resumed = parser.parse_args(["train", "data", "--output", "run", "--resume", "--nproc", "3"])
    assert worker_arguments(resumed) == ["train", "data", "--output", "run", "--resume"]


def test_nproc_below_one_and_nproc_under_torchrun_are_refused(tmp_path, monkeypatch):
    from medseg.cli import main

    assert main(["train", str(tmp_path), "--output", str(tmp_path / "run"), "--nproc", "0"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", str(tmp_path), "--output", str(tmp_path / "run"), "--nproc", "2"]) == 2
