"""`python -m workbench.launch.torchrun TORCHRUN_ARGS...`: torchrun for `workbench run --nproc N`, minus its tracebacks.

torchrun (`torch.distributed.run.main`) ends a stopped job by raising: a SIGTERM
becomes a `SignalException` traceback, a failed rank a `ChildFailedError` summary
with another. Each rank is a `workbench run` process that already said what
happened in one line (its error, or where it was interrupted and how to resume),
so here both end quietly with the exit code a shell expects: 128 + the signal,
or the first failed rank's own code.
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from workbench.errors import EXIT_OK


def main(argv: list[str]) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # its shutdown notes are not ours to show
    try:
        run(parse_args(argv))
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        code = err.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # negative: the rank died of that signal
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - run by `workbench run --nproc N`
    sys.exit(main(sys.argv[1:]))
