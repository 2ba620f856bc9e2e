"""What every ``python -m`` entry point shares: flags, distributed init, log quieting, errors.

``run(main)`` is the one way a command starts. It calls ``main(argv)`` and exits with its status;
an expected error (a bad argument or config field, a missing file, a diverged run, a result below
``config.eval.expect``, ...) becomes one line ``error: ...`` on stderr naming the argument, field
or file, and exit status 2, never a traceback. An unexpected error keeps its traceback: that is a
bug. Commands with absl flags (``jaxface.train``, ``jaxface.evaluate``) pass ``define_flags``;
then a bad flag, e.g. ``--config.model.kwargs.width=0.5`` on a config without that field, is
answered the same way. ``Parser`` is the argparse parser for the others: one line, status 2.

This module is a leaf: only the ``main()`` functions import it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, Callable, Mapping, NoReturn, Sequence

from absl import app
from absl import flags

from jaxface import errors

# Errors every command answers in one line: the user's input, not a bug.
EXPECTED: tuple[type[BaseException], ...] = (errors.ConfigError, FileNotFoundError,
                                             app.UsageError)


def one_line(e: BaseException | str) -> str:
  """An error message with its lines joined (a KeyError's message without its quotes)."""
  text = e.args[0] if isinstance(e, KeyError) and e.args else e
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def fail(message: BaseException | str, code: int = 2) -> NoReturn:
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(code)


class Parser(argparse.ArgumentParser):
  """Bad arguments: one line on stderr, exit status 2 (argparse would print the usage too)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _drop_probe_warnings(record: logging.LogRecord) -> bool:
  """tfds warns of a missing dataset_info.json whenever it probes a data_dir that is not
  prepared; the command then says in its own line what is missing and how to build it."""
  return "has no dataset_info.json" not in record.getMessage()


def _last_line(text: BaseException | str) -> str:
  """The final line of an error text: of an embedded traceback, the error itself (without the
  exception's qualified name)."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else ""


def _parse_absl_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every failure in one line naming the flag."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    head, sep, tail = text.partition("Traceback (most recent call last):")
    fail(head.strip() + " " + _last_line(sep + tail) if sep else text)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections' config flags raise these for an override (--config.a.b=v) the config
    # cannot take: a field it does not have (a locked config gets no new ones) or a bad value.
    overrides = [a for a in argv[1:] if a.startswith("--") and "." in a.split("=", 1)[0]]
    key = one_line(e).strip("'\"")
    culprit = next((a for a in overrides if a.split("=", 1)[0].endswith("." + key)), None)
    if culprit is not None and isinstance(e, (AttributeError, KeyError)):
      fail(f"{culprit}: the config has no field {key!r} (an override sets an existing field)")
    fail(f"{culprit or ' '.join(overrides) or 'flags'}: {one_line(e)}")
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    error = getattr(value, "_error", None) if type(value).__name__ == "_ErrorConfig" else None
    if error is not None:  # a config file that failed to load (reported on first use otherwise)
      fail(f"--{name}: {_last_line(error)}")
  return rest


def run(main: Callable[..., int | None], *, define_flags: Callable[[], None] | None = None,
        expected: tuple[type[BaseException], ...] = ()) -> NoReturn:
  """Runs ``main`` as the program and exits; see the module docstring.

  Args:
    main: ``main(argv) -> exit status`` (None: 0).
    define_flags: the command's absl flags; given, the flags are parsed with absl (one line on a
      bad flag) and ``main`` gets the remaining arguments, else ``main(None)`` parses
      ``sys.argv`` itself (argparse).
    expected: the command's own expected errors, besides ``EXPECTED``.
  """
  catch = EXPECTED + tuple(expected)
  logging.getLogger("absl").addFilter(_drop_probe_warnings)

  def guarded(argv):
    try:
      return main(argv)
    except catch as e:
      fail(e)

  if define_flags is None:
    sys.exit(guarded(None) or 0)
  define_flags()
  app.run(guarded, flags_parser=_parse_absl_flags)
  sys.exit(0)  # app.run exits itself; not reached


# ----------------------------------------------------------------------------- shared flags

def define_multihost_flag(help_text: str = "call jax.distributed.initialize() first"
                          ) -> flags.FlagHolder:
  return flags.DEFINE_bool("multihost", False, help_text)


def quiet_logs() -> None:
  """Warnings only from libraries (Orbax logs every file it writes at INFO), progress from ours;
  an explicit --verbosity wins. Call it before jax initialises its backends."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
    std_logging.getLogger("jaxface").setLevel(std_logging.INFO)


# ----------------------------------------------------------------------------- multi-host

# Variables of a plain cluster (no Slurm / Open MPI for jax.distributed to detect).
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"
_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_LOCAL_DEVICES = "JAX_LOCAL_DEVICE_IDS"


def distributed_args(multihost: bool, environ: Mapping[str, str]) -> dict[str, Any] | None:
  """Keyword arguments of ``jax.distributed.initialize`` for this process; None: single process.

  With JAX_NUM_PROCESSES / JAX_PROCESS_ID set, the coordinator, count, id (and
  JAX_LOCAL_DEVICE_IDS) are passed explicitly and cluster detection is turned off, so a plain
  launch inside a Slurm allocation is not mistaken for one task per GPU. Otherwise nothing is
  passed: jax detects Slurm, Open MPI, Kubernetes and Cloud TPU itself (and reads
  JAX_COORDINATOR_ADDRESS, e.g. to override Slurm's first-node address).
  """
  explicit = [k for k in (_ENV_NUM_PROCESSES, _ENV_PROCESS_ID) if environ.get(k)]
  if not (multihost or environ.get(_ENV_COORDINATOR) or explicit):
    return None
  if not explicit:
    return {}
  missing = [k for k in (_ENV_COORDINATOR, _ENV_NUM_PROCESSES, _ENV_PROCESS_ID)
             if not environ.get(k)]
  if missing:
    raise app.UsageError(f"multi-host: {', '.join(explicit)} set but {', '.join(missing)} not; "
                         "a plain cluster needs all of JAX_COORDINATOR_ADDRESS (host:port of "
                         "process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID")

  def integer(key: str) -> int:
    try:
      return int(environ[key])
    except ValueError:
      raise app.UsageError(f"{key}={environ[key]!r} is not an integer") from None

  n, i = integer(_ENV_NUM_PROCESSES), integer(_ENV_PROCESS_ID)
  if n < 1 or not 0 <= i < n:
    raise app.UsageError(f"{_ENV_PROCESS_ID}={i} must be in [0, {_ENV_NUM_PROCESSES}={n})")
  address = environ[_ENV_COORDINATOR]
  if not address.rpartition(":")[2].isdigit():
    raise app.UsageError(f"{_ENV_COORDINATOR}={address!r} must be host:port")
  args = {"coordinator_address": address, "num_processes": n, "process_id": i,
          "cluster_detection_method": "deactivate"}
  if environ.get(_ENV_LOCAL_DEVICES):
    try:
      args["local_device_ids"] = [int(d) for d in environ[_ENV_LOCAL_DEVICES].split(",")]
    except ValueError:
      raise app.UsageError(f"{_ENV_LOCAL_DEVICES}={environ[_ENV_LOCAL_DEVICES]!r} is not a "
                           "comma-separated list of integers") from None
  return args


def init_distributed(multihost: bool) -> None:
  """Calls ``jax.distributed.initialize`` when asked (before any other JAX call), then prints
  this process' place: one line per process, so a launcher's log shows every host joined."""
  import jax  # pylint: disable=g-import-not-at-top
  args = distributed_args(multihost, os.environ)
  if args is not None:
    try:
      jax.distributed.initialize(**args)
    except ValueError as e:  # jax found no cluster to take the missing values from
      raise app.UsageError(
          f"jax.distributed.initialize: {e} No Slurm / Open MPI environment was detected: set "
          "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
          "(launch/multihost.sh does)") from None
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} "
        f"local / {jax.device_count()} global devices ({jax.default_backend()})", flush=True)
