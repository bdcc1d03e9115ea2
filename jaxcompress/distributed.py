"""Multi-device and multi-host plumbing: one `data` mesh axis over every device.

The same code runs on 1 CPU, 8 fake CPU devices, a GPU box and a TPU pod slice: the train state
is replicated, batches are sharded along their leading axis, and XLA inserts the cross-device
reductions (batch-norm statistics and metric means are global, exactly as on one device).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcompress.errors import ConfigError

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None,
               auto: bool = False) -> None:
  """Calls `jax.distributed.initialize` when a multi-process run is requested.

  Args:
    coordinator_address: "host:port" of process 0; with `num_processes`/`process_id` this starts
      an explicit cluster (GPU clusters, localhost tests).
    num_processes: number of processes.
    process_id: index of this process.
    local_device_ids: devices of this process (GPU: one process per GPU).
    auto: let JAX detect the cluster (TPU pods, SLURM, Open MPI).
  """
  if coordinator_address is not None or auto:
    # CPU processes need a collectives backend to talk to each other (tests, CPU clusters).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_device_ids is not None:
    local_device_ids = [int(i) for i in local_device_ids]
  if coordinator_address is not None:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  elif auto:
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh with axis `data` over all (global) devices."""
  devices = devices if devices is not None else jax.devices()
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of a value copied on every device (the train state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch split along its leading axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a stack of batches (steps, batch, ...): each batch split along its own axis."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises a ValueError naming the fix when the batch does not split evenly."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ConfigError(f"Global batch size {global_batch_size} is not divisible by the {n} devices. "
                     f"Set config.data.batch_size to a multiple of {n}.")


def _assemble(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Each process's local arrays as global arrays with `sharding` (one process: a device_put)."""
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into global arrays sharded over the mesh."""
  return _assemble(local_batch, batch_sharding(mesh))


def global_batches(local_stack: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """`global_batch` for a stack of batches (steps, local batch, ...), split along axis 1."""
  return _assemble(local_stack, stacked_batch_sharding(mesh))


def is_main_process() -> bool:
  """Only process 0 writes logs and files other than checkpoints."""
  return jax.process_index() == 0


def host_platform_flag(num_devices: int) -> None:
  """Sets XLA_FLAGS for `num_devices` fake CPU devices; call before JAX initialises a backend."""
  flag = f"--xla_force_host_platform_device_count={num_devices}"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
