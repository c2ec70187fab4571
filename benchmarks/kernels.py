"""Time (and on GPU, peak memory and bandwidth) of medseg.kernels' ops against plain PyTorch.

CPU rows (always):

- selective scan, forward + backward at B = 1, D = 64, N = 16, L = 4096: the per-token loop
  (``selective_scan_loop_ref``) against the chunked reference (``selective_scan_ref``, the CPU
  implementation); outputs and gradients are compared first. Issue target: chunked >= 10x faster.
- depthwise conv3d forward at B = 1, C = 32, 96^3, k = 3 (and without ``--quick`` forward + backward at
  64^3, k = 3 and 5): PyTorch's conv3d on a default-layout input, on a ``channels_last_3d`` input, and
  ``depthwise_conv3d_ref`` on a default-layout input (which converts internally for k >= 5).

GPU rows (only with a CUDA device and CuPy; otherwise the script says they were skipped): the CuPy
kernels against the PyTorch references at realistic shapes (depthwise: B = 2, C 32..256, 32^3..128^3,
k 3/5/7; scan: B = 2, D 96..384, L 512..32768, N = 16; coupling), each checked against the reference
before it is timed, with time, peak memory (``torch.cuda.max_memory_allocated``) and achieved bandwidth
(compulsory bytes: inputs read once, outputs written once) against the card's theoretical bandwidth.

Usage::

    python benchmarks/kernels.py --quick     # a couple of minutes on a 2-core CPU
    python benchmarks/kernels.py             # more repeats; on a GPU, the full shape grid
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from medseg import kernels

GB = 1e9


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shapes (CPU part in ~2 minutes)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, as in the tests: stable timings)"
    )
    parser.add_argument("--skip-gpu", action="store_true", help="do not run the GPU rows even with a GPU")
    parser.add_argument("--skip-cpu", action="store_true", help="do not run the CPU rows (GPU rows only)")
    return parser.parse_args(argv)


# CPU rows use the process's CPU time: on a shared machine, wall time also counts the time spent waiting
# for a core (which inflates the many-small-steps loop most). With one thread the two agree on an idle machine.
CPU_CLOCK = time.process_time


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum CPU time of ``repeats`` calls after one warm-up call (seconds)."""
    fn()
    return min(_timed(fn)[1] for _ in range(repeats))


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), CPU seconds it took)``."""
    start = CPU_CLOCK()
    result = fn()
    return result, CPU_CLOCK() - start


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths))


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(_row(header, widths))
    print(_row(["-" * w for w in widths], widths))
    for r in rows:
        print(_row(r, widths))


# ----------------------------------------------------------------------------------------------- CPU


def _scan_inputs(batch: int, channels: int, length: int, state: int, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    t = {
        "u": torch.randn(batch, channels, length, generator=g),
        "delta": torch.randn(batch, channels, length, generator=g) * 0.5,
        "A": -(torch.rand(channels, state, generator=g) + 0.5),
        "B": torch.randn(batch, state, length, generator=g),
        "C": torch.randn(batch, state, length, generator=g),
        "D": torch.randn(channels, generator=g),
        "z": torch.randn(batch, channels, length, generator=g),
    }
    return {k: v.to(device, torch.float32 if k == "A" else dtype).requires_grad_() for k, v in t.items()}


def _scan_step(fn, inputs, **kwargs):
    out = fn(**inputs, delta_softplus=True, **kwargs)
    grads = torch.autograd.grad(out.float().square().sum(), list(inputs.values()))
    return out, grads


def cpu_scan(quick: bool) -> list[list[str]]:
    batch, channels, length, state = 1, 64, 4096, 16
    inputs = _scan_inputs(batch, channels, length, state)
    # The loop's first call is timed too: it has nothing to warm up (4096 tiny steps), and it is slow.
    (out_l, grads_l), t_loop = _timed(lambda: _scan_step(kernels.selective_scan_loop_ref, inputs))
    if not quick:
        t_loop = min(t_loop, _best_of(lambda: _scan_step(kernels.selective_scan_loop_ref, inputs), 1))
    out_c, grads_c = _scan_step(kernels.selective_scan_ref, inputs)
    diff_out = (out_c - out_l).abs().max().item() / out_l.abs().max().item()
    diff_grad = max((a - b).abs().max().item() / b.abs().max().item() for a, b in zip(grads_c, grads_l))
    t_chunk = _best_of(lambda: _scan_step(kernels.selective_scan_ref, inputs), 3 if quick else 10)
    shape = f"B={batch} D={channels} L={length} N={state}"
    return [
        ["scan fwd+bwd, per-token loop", shape, f"{t_loop * 1e3:.1f}", "1.0x", ""],
        [
            "scan fwd+bwd, chunked (ref)",
            shape,
            f"{t_chunk * 1e3:.1f}",
            f"{t_loop / t_chunk:.1f}x",
            f"max rel. diff out {diff_out:.1e}, grads {diff_grad:.1e}",
        ],
    ]


def cpu_depthwise(quick: bool) -> list[list[str]]:
    cases = [(32, 96, 3, False)] + ([] if quick else [(32, 64, 3, True), (32, 64, 5, True)])
    rows = []
    for channels, size, k, backward in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, channels, size, size, size, generator=g, requires_grad=backward)
        w = torch.randn(channels, 1, k, k, k, generator=g, requires_grad=backward)
        x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_(backward)
        shape = f"1x{channels}x{size}^3 k={k}"
        kind = "fwd+bwd" if backward else "fwd"

        def run(fn, inp, backward=backward, w=w):
            if backward:
                fn(inp, w).sum().backward()
            else:
                with torch.no_grad():
                    fn(inp, w)

        def conv(inp, weight, k=k, channels=channels):
            return F.conv3d(inp, weight, padding=k // 2, groups=channels)

        variants = [
            ("conv3d, default layout", lambda: run(conv, x)),
            ("conv3d, channels_last_3d input", lambda: run(conv, x_cl)),
            ("depthwise_conv3d_ref, default layout", lambda: run(kernels.depthwise_conv3d_ref, x)),
        ]
        # Interleaved repeats, so that load on a shared machine affects every variant alike.
        best = [float("inf")] * len(variants)
        for _ in range(2 if quick else 3):
            for i, (_, fn) in enumerate(variants):
                best[i] = min(best[i], _timed(fn)[1])
        for (name, _), t in zip(variants, best):
            rows.append([f"depthwise {kind}, {name}", shape, f"{t * 1e3:.1f}", f"{best[0] / t:.1f}x", ""])
    return rows


# ----------------------------------------------------------------------------------------------- GPU


def _peak_bandwidth_gbs() -> float | None:
    """Theoretical memory bandwidth of the current GPU (GB/s), or ``None`` if the driver does not say."""
    try:
        import cupy

        dev = cupy.cuda.Device().id
        clock_khz = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMemoryClockRate, dev)
        bus_bits = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrGlobalMemoryBusWidth, dev)
    except Exception:  # noqa: BLE001 - the attribute is deprecated in recent CUDA; the column then shows "?"
        return None
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / GB


def _gpu_measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(seconds per call, peak MiB above the memory in use before the call)."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / 1e3 / repeats, peak


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def gpu_rows(quick: bool) -> list[list[str]]:
    peak_bw = _peak_bandwidth_gbs()
    repeats = 5 if quick else 20
    rows: list[list[str]] = []

    def add(op: str, shape: str, fn_k, fn_t, moved_bytes: float) -> None:
        t_k, m_k = _gpu_measure(fn_k, repeats)
        t_t, m_t = _gpu_measure(fn_t, repeats)
        gbs = moved_bytes / t_k / GB
        share = f"{100 * gbs / peak_bw:.0f}%" if peak_bw else "?"
        rows.append([op, shape, f"{t_k * 1e3:.3f}", f"{t_t * 1e3:.3f}", f"{t_t / t_k:.2f}x",
                     f"{m_k:.0f}", f"{m_t:.0f}", f"{gbs:.0f}", share])  # fmt: skip

    # depthwise conv3d
    sizes = [32, 64] if quick else [32, 64, 128]
    channel_list = [32, 128] if quick else [32, 64, 128, 256]
    for size in sizes:
        for channels in channel_list:
            for k in (3, 5, 7):
                x = torch.randn(2, channels, size, size, size, device="cuda", requires_grad=True)
                w = torch.randn(channels, 1, k, k, k, device="cuda", requires_grad=True)
                err = _max_rel(kernels.depthwise_conv3d(x, w, backend="cupy"), kernels.depthwise_conv3d_ref(x, w))
                if err > 1e-4:
                    raise RuntimeError(f"depthwise kernel differs from the reference by {err:.2e}")
                g = torch.randn_like(x)

                def fwd(backend, x=x, w=w):
                    with torch.no_grad():
                        kernels.depthwise_conv3d(x, w, backend=backend)

                def step(backend, x=x, w=w, g=g):
                    kernels.depthwise_conv3d(x, w, backend=backend).backward(g)

                shape = f"2x{channels}x{size}^3 k={k}"
                add("depthwise fwd", shape, lambda: fwd("cupy"), lambda: fwd("torch"), 2 * x.numel() * 4)
                add("depthwise fwd+bwd", shape, lambda: step("cupy"), lambda: step("torch"), 6 * x.numel() * 4)
                del x, w, g
    # coupling
    for size in [64, 128]:
        a = torch.randn(2, 64, size, size, size, device="cuda")
        b = torch.randn_like(a)
        add("coupling fwd", f"2x64x{size}^3", lambda: kernels.coupling_forward(a, b, backend="cupy"),
            lambda: kernels.coupling_forward(a, b, backend="torch"), 3 * a.numel() * 4)  # fmt: skip
    # selective scan
    lengths = [512, 4096] if quick else [512, 4096, 32768]
    for channels in ([96, 384] if quick else [96, 192, 384]):
        for length in lengths:
            inputs = _scan_inputs(2, channels, length, 16, device="cuda")

            def scan(backend, inputs=inputs):
                return _scan_step(lambda **kw: kernels.selective_scan(**kw, backend=backend), inputs)

            (out_k, grads_k), (out_t, grads_t) = scan("cupy"), scan("torch")
            err = max(_max_rel(out_k, out_t), *(_max_rel(a, b) for a, b in zip(grads_k, grads_t)))
            if err > 1e-3:
                raise RuntimeError(f"selective scan kernels differ from the reference by {err:.2e}")
            moved = (5 * 2 * channels * length + 2 * 2 * 16 * length) * 4  # u, delta, z, out + grads; B, C
            shape = f"B=2 D={channels} L={length} N=16"
            add("scan fwd+bwd", shape, lambda scan=scan: scan("cupy"), lambda scan=scan: scan("torch"), moved)
    rows += reversible_step_rows(quick)
    return rows


def reversible_step_rows(quick: bool) -> list[list[str]]:
    """A whole ``reversible_unet`` training step (forward, loss, backward, AdamW) with the CuPy kernels and with
    the PyTorch ones (``kernel_backend``), same weights and input; gradients are compared first."""
    from medseg.networks import create

    rows: list[list[str]] = []
    size = 96 if quick else 128
    x = torch.randn(1, 4, size, size, size, device="cuda")
    target = (torch.rand(1, 3, size, size, size, device="cuda") > 0.5).float()
    grads = {}
    steps = {}
    for backend in ("cupy", "torch"):
        torch.manual_seed(0)
        model = create("reversible_unet", 3, 4, 3, kernel_backend=backend).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def backward(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            F.binary_cross_entropy_with_logits(out, target).backward()

        def step(backward=backward, optimizer=optimizer) -> None:
            backward()
            optimizer.step()

        backward()  # the first gradients, before any update, are compared
        grads[backend] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        steps[backend] = step
    err = _max_rel(grads["cupy"], grads["torch"])
    if err > 1e-3:
        raise RuntimeError(f"reversible_unet gradients with the CuPy kernels differ by {err:.2e}")
    t_k, m_k = _gpu_measure(steps["cupy"], 3 if quick else 10)
    t_t, m_t = _gpu_measure(steps["torch"], 3 if quick else 10)
    rows.append(["reversible_unet train step", f"1x4x{size}^3 (grad diff {err:.1e})", f"{t_k * 1e3:.1f}",
                 f"{t_t * 1e3:.1f}", f"{t_t / t_k:.2f}x", f"{m_k:.0f}", f"{m_t:.0f}", "", ""])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"medseg kernels benchmark: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{platform.processor() or platform.machine()}{', quick' if args.quick else ''}")  # fmt: skip
    if not args.skip_cpu:
        rows = cpu_scan(args.quick) + cpu_depthwise(args.quick)
        _print_table("CPU (ms of process CPU time, best of repeats; speed-up against the first row of each group)",
                     ["op", "shape", "ms", "speed-up", "check"], rows)  # fmt: skip
    has_gpu = torch.cuda.is_available() and kernels.resolve_backend("auto", torch.zeros(1, device="cuda")) == "cupy"
    if args.skip_gpu or not has_gpu:
        reason = "--skip-gpu" if args.skip_gpu else "no CUDA device with CuPy here"
        print(f"\nGPU rows skipped ({reason}): depthwise, coupling and selective-scan kernels were not timed.")
        return 0
    bw = _peak_bandwidth_gbs()
    _print_table(
        f"GPU {torch.cuda.get_device_name()} (theoretical bandwidth {f'{bw:.0f} GB/s' if bw else 'unknown'})",
        ["op", "shape", "cupy ms", "torch ms", "speed-up", "cupy MiB", "torch MiB", "cupy GB/s", "of peak"],
        gpu_rows(args.quick),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
