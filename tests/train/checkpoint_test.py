"""Checkpoint checksums: the fingerprint against NumPy, damage detection, fallback, old checkpoints."""
from __future__ import annotations

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcompress import errors
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train.state import TrainState

# MurmurHash3's fmix32 constants and the two lane seeds, as documented in the module docstring
# (https://github.com/aappleby/smhasher, src/MurmurHash3.cpp).
_M32 = 0xFFFFFFFF
_SEEDS = (0x9E3779B9, 0x7F4A7C15)


def _np_fmix32(h):
  h = np.asarray(h, np.uint64)
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & _M32
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & _M32
  return h ^ (h >> 16)


def np_fingerprint(x) -> str:
  """Reference: sum over elements of fmix32(word ^ fmix32(index * golden + seed)) mod 2**32."""
  x = np.asarray(x)
  name = x.dtype.name
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  word_type = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]
  words = np.ascontiguousarray(x).reshape(-1).view(word_type).astype(np.uint64)
  key = (np.arange(words.size, dtype=np.uint64) * 0x9E3779B9) & _M32
  lanes = [int(np.sum(_np_fmix32(words ^ _np_fmix32((key + seed) & _M32)), dtype=np.uint64))
           & _M32 for seed in _SEEDS]
  return f"{name}:{lanes[0]:08x}{lanes[1]:08x}"


def make_state(seed: int, step: int, width: int = 64) -> TrainState:
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {"w": jax.random.normal(k1, (256, width)), "b": jax.random.normal(k2, (width,))}
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    model_state={"count": jnp.asarray(seed, jnp.int32)},
                    opt_state={"sgd": {"mu": jax.tree.map(jnp.zeros_like, params)}},
                    extra={"flag": jnp.asarray(seed % 2 == 0)},
                    rng=jax.random.key_data(jax.random.key(seed)))


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def flip_largest_file(step_dir: str, count: int = 200) -> str:
  """Inverts `count` bytes in the middle of the largest file under `step_dir` (a bad disk)."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  assert size > 4 * count, (largest, size)
  with open(largest, "r+b") as f:
    f.seek(size // 2)
    data = f.read(count)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in data))
  return largest


def save_steps(workdir: str, *states: TrainState, **kwargs) -> None:
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False, **kwargs)
  for s in states:
    ckpt.save(s)
  ckpt.close()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int8", "uint32", "bool"])
def test_fingerprint_matches_numpy_reference(dtype):
  rng = np.random.default_rng(0)
  raw = rng.standard_normal((5, 7, 3)) * 50
  if dtype == "bool":
    host = raw > 0
  elif dtype == "bfloat16":
    host = raw.astype(jnp.bfloat16)  # ml_dtypes bfloat16 on the host
  else:
    host = raw.astype(dtype)
  tree = {"a": jnp.asarray(host), "scalar": jnp.asarray(host.reshape(-1)[3])}
  got = checkpoint_lib.fingerprints(tree)
  assert got == {"['a']": np_fingerprint(host), "['scalar']": np_fingerprint(host.reshape(-1)[3])}


def test_fingerprint_of_a_sharded_array_equals_the_unsharded_one():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
  host = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
  sharded = jax.device_put(host, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("d" if 16 % len(jax.devices()) == 0 else None)))
  assert len(jax.devices()) == 1 or not sharded.is_fully_replicated
  assert checkpoint_lib.fingerprints([sharded]) == checkpoint_lib.fingerprints([host])
  assert checkpoint_lib.fingerprints([sharded])["[0]"] == np_fingerprint(host)


def test_fingerprint_sees_one_changed_bit_and_swapped_elements():
  host = np.random.default_rng(2).standard_normal((32, 8)).astype(np.float32)
  base = checkpoint_lib.fingerprints([host])
  flipped = host.copy()
  flipped.view(np.uint32)[17, 3] ^= 1  # the lowest mantissa bit of one element
  swapped = host.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  assert checkpoint_lib.fingerprints([flipped]) != base
  assert checkpoint_lib.fingerprints([swapped]) != base


def test_flipped_bytes_in_the_largest_file_are_detected(tmp_path):
  workdir = str(tmp_path)
  save_steps(workdir, make_state(0, 4))
  flip_largest_file(os.path.join(workdir, "checkpoints", "4"))
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  # Depending on where the flipped bytes land, orbax fails to read or the checksum differs.
  with pytest.raises(errors.CheckpointError, match=r"Cannot restore checkpoint step 4 in .*: "
                     r".+\. The step is damaged"):
    ckpt.restore(make_state(9, 0), step=4)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))  # explicit: nothing deleted


def replace_arrays(workdir: str, step: int, tmp_path) -> None:
  """Swaps a step's array files for other, readable ones of the same structure."""
  other = str(tmp_path / "other")
  save_steps(other, make_state(100, step))
  target = os.path.join(workdir, "checkpoints", str(step), "default")
  shutil.rmtree(target)
  shutil.copytree(os.path.join(other, "checkpoints", str(step), "default"), target)
  shutil.rmtree(other)


def test_values_replaced_behind_orbax_fail_the_checksum(tmp_path):
  # A readable checkpoint whose arrays are not the saved ones: orbax restores it without
  # complaint, only the fingerprints can tell.
  workdir = str(tmp_path / "w")
  save_steps(workdir, make_state(0, 4))
  replace_arrays(workdir, 4, tmp_path)
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  with pytest.raises(errors.CheckpointError, match=r"step 4 .*checksum mismatch in .*params"):
    ckpt.restore(make_state(9, 0), step=4)


@pytest.mark.parametrize("damage", ["flipped_bytes", "replaced_arrays"])
def test_damaged_newest_step_falls_back_with_one_warning_and_saves_resume(tmp_path, caplog,
                                                                         damage):
  workdir = str(tmp_path / "w")
  older, newer = make_state(0, 2), make_state(1, 4)
  save_steps(workdir, older, newer)
  if damage == "flipped_bytes":
    flip_largest_file(os.path.join(workdir, "checkpoints", "4"))
  else:
    replace_arrays(workdir, 4, tmp_path)
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(make_state(9, 0))
  assert_trees_equal(restored, older)
  warnings = [r for r in caplog.records
              if r.levelno >= logging.WARNING and r.name == checkpoint_lib.__name__]
  assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
  line = warnings[0].getMessage()
  assert "\n" not in line and "step 4" in line and "falling back to step 2" in line, line
  # The damaged step is gone, so the resumed run saves step 4 again and a rerun restores it.
  assert ckpt.latest_step() == 2
  assert sorted(os.listdir(ckpt.directory)) == ["2"]
  ckpt.save(newer)
  ckpt.close()
  again = checkpoint_lib.Checkpointer(workdir, async_save=False)
  assert again.latest_step() == 4
  assert_trees_equal(again.restore(make_state(9, 0)), newer)
  again.close()


def test_every_step_damaged_raises_checkpoint_error_and_keeps_the_files(tmp_path, caplog):
  workdir = str(tmp_path)
  save_steps(workdir, make_state(0, 2), make_state(1, 4))
  for step in ("2", "4"):
    flip_largest_file(os.path.join(workdir, "checkpoints", step))
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  with caplog.at_level(logging.WARNING):
    with pytest.raises(errors.CheckpointError, match=r"step 4 .*steps \[2\] .*No intact "
                       r"checkpoint.*new --workdir"):
      ckpt.restore(make_state(9, 0))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_checkpoint_without_checksums_restores_as_before(tmp_path):
  # As written by versions before checksums: plain orbax, no custom metadata.
  workdir = str(tmp_path)
  state = make_state(3, 6)
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(6, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  manager.close()
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  assert_trees_equal(ckpt.restore(make_state(9, 0)), state)
  ckpt.close()


def test_async_saves_with_garbage_collection_keep_checksums(tmp_path):
  workdir = str(tmp_path)
  states = [make_state(i, 2 * (i + 1)) for i in range(3)]
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=2, async_save=True)
  for s in states:
    ckpt.save(s)
  ckpt.close()
  ckpt = checkpoint_lib.Checkpointer(workdir, async_save=False)
  assert ckpt.all_steps() == [4, 6]
  manager = ocp.CheckpointManager(ckpt.directory, item_handlers=ocp.StandardCheckpointHandler())
  for step, state in ((4, states[1]), (6, states[2])):
    recorded = manager.metadata(step).custom_metadata[checkpoint_lib.METADATA_KEY]["leaves"]
    expected = {jax.tree_util.keystr(p): np_fingerprint(x)
                for p, x in jax.tree_util.tree_leaves_with_path(state)}
    assert recorded == expected
  manager.close()
  assert_trees_equal(ckpt.restore(make_state(9, 0)), states[2])
  ckpt.close()


def test_explicit_missing_step_is_a_checkpoint_error(tmp_path):
  save_steps(str(tmp_path), make_state(0, 2))
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(errors.CheckpointError, match=r"No checkpoint step 7 .*\[2\]"):
    ckpt.restore(make_state(9, 0), step=7)
