"""Peak memory of one training step: reversible U-Net against its plain-autograd twin.

Each measurement runs in a fresh Python subprocess, so allocator caches and earlier peaks of one run do not
leak into the next. In the subprocess the network (``reversible_unet``, same widths and depth in both
modes) and a random input ``(batch, in_channels, size, size, size)`` are built first; then one training
step (forward, cross-entropy loss, backward) runs and the script reports:

- on CPU: the peak resident set size of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus
  the resident size measured just before the step (after building the model and the input);
- on a CUDA GPU: ``torch.cuda.max_memory_allocated()`` minus the allocated memory before the step.

Four runs: reversible and plain at ``blocks_per_stage = B`` and ``2 * B``. The targets (issue): reversible
peak at most 1/3 of the plain twin's, and growing by less than 10% when ``B`` doubles.

The subprocesses run with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so every tensor buffer is
its own memory mapping, returned to the system when freed: resident size then follows live tensors instead
of heap fragmentation (the default threshold adapts upwards to 32 MiB after the first large free).

Usage::

    python benchmarks/reversible_memory.py                # 1 x 4 x 128^3, B = 2 and 4, CPU
    python benchmarks/reversible_memory.py --size 64      # smaller, faster
    python benchmarks/reversible_memory.py --device cuda  # GPU peak memory (max_memory_allocated)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

MIB = 1024 * 1024


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="edge length of the cubic input (default 128)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--in-channels", type=int, default=4, help="input channels (default 4, as BraTS)")
    parser.add_argument("--out-channels", type=int, default=3, help="output channels (default 3)")
    parser.add_argument("--variant", default="default", help="reversible_unet variant (default 'default')")
    parser.add_argument(
        "--blocks", type=int, default=None, help="blocks per stage B; also measured at 2B (default: the variant's)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run (default 2)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    # Internal: one measurement in this process (used by the parent for each subprocess).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("reversible", "plain"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure(args: argparse.Namespace) -> dict:
    """One training step in this process; returns the memory and time figures."""
    import gc

    import torch
    import torch.nn.functional as F

    from medseg.networks import create

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = create(
        "reversible_unet",
        3,
        args.in_channels,
        args.out_channels,
        variant=args.variant,
        blocks_per_stage=args.blocks,
        reversible=args.mode == "reversible",
    ).to(device)
    shape = (args.batch, args.in_channels, *(args.size,) * 3)
    x = torch.randn(shape, device=device)
    target = torch.randint(0, args.out_channels, (args.batch, *(args.size,) * 3), device=device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    baseline_rss = _rss_bytes()
    peak_rss_before = _peak_rss_bytes()
    start = time.perf_counter()
    loss = F.cross_entropy(net(x), target)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "mode": args.mode,
        "blocks_per_stage": args.blocks,
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds": seconds,
        "baseline_rss_mib": baseline_rss / MIB,
        "peak_rss_mib": _peak_rss_bytes() / MIB,
        "peak_rss_before_step_mib": peak_rss_before / MIB,
        "step_cpu_mib": (_peak_rss_bytes() - baseline_rss) / MIB,
    }
    if device.type == "cuda":
        result["step_cuda_mib"] = (torch.cuda.max_memory_allocated() - baseline) / MIB
        result["gpu"] = torch.cuda.get_device_name()
    return result


def _run_child(args: argparse.Namespace, mode: str, blocks: int) -> dict:
    """Measure one configuration in a fresh subprocess."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        f"--mode={mode}",
        f"--blocks={blocks}",
        f"--size={args.size}",
        f"--batch={args.batch}",
        f"--in-channels={args.in_channels}",
        f"--out-channels={args.out_channels}",
        f"--variant={args.variant}",
        f"--device={args.device}",
        f"--threads={args.threads}",
    ]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement {mode} B={blocks} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _variant_blocks(variant: str) -> int:
    from medseg.networks import get_info

    blocks = get_info("reversible_unet").variants[variant]["blocks_per_stage"]
    if not isinstance(blocks, int):
        raise SystemExit(f"variant {variant!r} has per-level blocks {blocks}; pass --blocks")
    return blocks


def main(argv: list[str] | None = None) -> int:
    """Run the four measurements and print the table (or, with ``--child``, one measurement as JSON)."""
    args = _parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args)))
        return 0
    base = args.blocks if args.blocks is not None else _variant_blocks(args.variant)
    unit = "step_cuda_mib" if args.device == "cuda" else "step_cpu_mib"
    rows = [_run_child(args, mode, blocks) for blocks in (base, 2 * base) for mode in ("reversible", "plain")]
    by_key = {(r["mode"], r["blocks_per_stage"]): r for r in rows}
    what = "CUDA max_memory_allocated" if args.device == "cuda" else "CPU peak RSS"
    print(
        f"reversible_unet/{args.variant}, input {args.batch}x{args.in_channels}x{args.size}^3, device "
        f"{args.device}, {what} of one training step above the model+input baseline"
    )
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, {platform.system()}")
    print("| mode | blocks/stage | parameters | step peak (MiB) | step time (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['blocks_per_stage']} | {r['parameters']:,} | {r[unit]:.0f} | {r['seconds']:.1f} |"
        )
    ratios = {b: by_key[("reversible", b)][unit] / by_key[("plain", b)][unit] for b in (base, 2 * base)}
    growth = by_key[("reversible", 2 * base)][unit] / by_key[("reversible", base)][unit] - 1
    plain_growth = by_key[("plain", 2 * base)][unit] / by_key[("plain", base)][unit] - 1
    for b, ratio in ratios.items():
        verdict = "meets" if ratio <= 1 / 3 else "MISSES"
        print(f"reversible / plain at B={b}: {ratio:.3f} ({verdict} the <= 1/3 target)")
    verdict = "meets" if growth < 0.10 else "MISSES"
    print(f"reversible growth B={base} -> {2 * base}: {growth:+.1%} ({verdict} the < 10% target); plain: {plain_growth:+.1%}")
    if args.json:
        from medseg.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"rows": rows, "ratios": ratios, "reversible_growth": growth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
