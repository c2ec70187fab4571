"""Start ``N`` medseg processes on this machine, as ``torchrun --standalone --nproc-per-node N -m medseg ...`` does.

``medseg train --nproc N`` uses :func:`launch_local`: PyTorch's elastic launcher (the engine behind
``torchrun``) runs in this process, starts the workers ``python -m medseg ...`` with torchrun's environment,
and stops all of them as soon as one exits with an error. A rendezvous on ``localhost`` with a free port
connects them; nothing listens beyond this machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from medseg.errors import ConfigError

#: Exit code when the workers were stopped by a signal (Ctrl-C, SIGTERM) rather than failing themselves.
EXIT_SIGNALLED = 130


def launcher_arguments(nproc: int, module_args: Sequence[str]) -> list[str]:
    """The ``torchrun`` arguments for ``nproc`` local workers running ``python -m medseg <module_args>``.

    Args:
        nproc: number of processes.
        module_args: the worker's ``medseg`` arguments, e.g. ``["train", "data", "--output", "run"]``.

    Returns:
        Arguments for ``torch.distributed.run``.

    Raises:
        ConfigError: ``nproc`` is less than 1.
    """
    if nproc < 1:
        raise ConfigError(f"the number of processes must be >= 1, got {nproc}")
    return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--module", "medseg", *module_args]


def launch_local(nproc: int, module_args: Sequence[str]) -> int:
    """Run ``python -m medseg <module_args>`` in ``nproc`` processes on this machine; wait for all of them.

    Args:
        nproc: number of processes.
        module_args: the workers' ``medseg`` arguments (the same for every worker).

    Returns:
        0 when every worker succeeded; otherwise the exit code of the first worker that failed (1 when it
        was killed by a signal), or :data:`EXIT_SIGNALLED` when the launcher itself was interrupted.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    args = parse_args(launcher_arguments(nproc, module_args))
    # What torchrun's --standalone means: a private c10d rendezvous on a free local port.
    args.rdzv_backend = "c10d"
    args.rdzv_endpoint = "localhost:0"
    args.rdzv_id = str(uuid.uuid4())
    config, entrypoint, entry_args = config_from_args(args)
    try:
        elastic_launch(config=config, entrypoint=entrypoint)(*entry_args)
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException:
        return EXIT_SIGNALLED
    return 0
