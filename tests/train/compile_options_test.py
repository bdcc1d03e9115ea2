"""config.compiler_options reach the engine's step programs; the GPU threefry lowering is scoped."""
from __future__ import annotations

import os
import sys

import jax
import ml_collections
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import loop_test  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

from configs import common  # noqa: E402
from configs.bnas import digits_search as bnas_digits  # noqa: E402
from jaxcompress import errors  # noqa: E402
from jaxcompress.train import compile_options, loop  # noqa: E402


def test_default_config_has_no_options():
  assert compile_options.step_compiler_options(common.base_config()) == {}
  assert compile_options.step_compiler_options({}) == {}


NEUTRAL = {"xla_backend_optimization_level": 3}  # XLA's default: valid on every backend


def test_config_dict_and_plain_dict_options():
  cfg = common.base_config()
  cfg.compiler_options = ml_collections.ConfigDict(NEUTRAL)
  assert compile_options.step_compiler_options(cfg) == NEUTRAL
  assert compile_options.step_compiler_options({"compiler_options": NEUTRAL}) == NEUTRAL


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_options_for_other_backends_are_dropped(monkeypatch, backend):
  monkeypatch.setattr(compile_options, "_backend", lambda: backend)
  raw = {"xla_gpu_autotune_level": 0, "xla_cpu_enable_fast_math": False, **NEUTRAL}
  kept = {k: v for k, v in raw.items() if k in NEUTRAL or k.startswith(f"xla_{backend}_")}
  # Validation compiles on the real (CPU) backend, so only check the filter's output here.
  monkeypatch.setattr(compile_options.jax, "jit", lambda *a, **k: _NoCompile())
  assert compile_options.step_compiler_options({"compiler_options": raw}) == kept


class _NoCompile:
  def lower(self, *args):
    return self

  def compile(self):
    return self


def test_digits_searches_turn_gpu_autotuning_off(monkeypatch):
  cfg = bnas_digits.get_config()
  assert cfg.compiler_options.to_dict() == {"xla_gpu_autotune_level": 0}
  monkeypatch.setattr(compile_options, "_backend", lambda: "cpu")
  assert compile_options.step_compiler_options(cfg) == {}  # CPU cache keys unchanged
  monkeypatch.setattr(compile_options, "_backend", lambda: "gpu")
  monkeypatch.setattr(compile_options.jax, "jit", lambda *a, **k: _NoCompile())
  assert compile_options.step_compiler_options(cfg) == {"xla_gpu_autotune_level": 0}


@pytest.mark.parametrize("raw,match", [
    (["xla_gpu_autotune_level", 0], "must map XLA option names"),
    ({"xla_gpu_autotune_level": [0]}, "values str, int, float or bool"),
    ({"xla_no_such_option": 1}, "not accepted by XLA.*xla_no_such_option"),
])
def test_bad_options_name_the_config_field(raw, match):
  with pytest.raises(errors.ConfigError, match=match):
    compile_options.step_compiler_options({"compiler_options": raw})


@pytest.mark.parametrize("on_device,steps_per_call,train", [
    (False, 1, "jit_train_step."), (False, 4, "jit_train_step_loop"), (True, 1, "jit_train_steps")])
def test_engine_compiles_steps_with_the_options_and_init_without(tmp_path, on_device,
                                                                 steps_per_call, train):
  # xla_dump_to is observable on CPU: XLA writes each module it compiles with the option.
  dump = tmp_path / "dump"
  cfg = loop_test.toy_config(num_epochs=1, steps_per_call=steps_per_call)
  cfg.data.on_device = on_device
  cfg.compiler_options = ml_collections.ConfigDict({"xla_dump_to": str(dump)})
  jax.clear_caches()  # the in-memory executables of other tests carry no options
  loop.run(cfg, str(tmp_path / "work"))
  names = " ".join(os.listdir(dump))
  assert train in names and "jit_eval_step" in names and "jit_on_epoch" in names
  assert "jit_init" not in names  # one_shot.jit_once compiles init with its own options


def test_unknown_option_stops_the_engine_before_compiling(tmp_path):
  cfg = loop_test.toy_config()
  cfg.compiler_options = ml_collections.ConfigDict({"xla_no_such_option": 1})
  with pytest.raises(errors.ConfigError, match="config.compiler_options"):
    loop.run(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def _flag() -> bool:
  return bool(getattr(jax.config, compile_options.THREEFRY_FLAG))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's behaviour")
def test_threefry_kernel_untouched_off_gpu():
  before = _flag()
  with compile_options.gpu_threefry_kernel():
    assert _flag() == before


@pytest.fixture
def fake_gpu(monkeypatch):
  monkeypatch.setattr(compile_options, "_on_gpu", lambda: True)
  monkeypatch.delenv(compile_options.THREEFRY_FLAG.upper(), raising=False)


def test_threefry_kernel_on_inside_and_restored_on_a_gpu(fake_gpu):
  before = _flag()
  with compile_options.gpu_threefry_kernel():
    assert _flag() is True
  assert _flag() == before
  with pytest.raises(RuntimeError):  # restored on an error too
    with compile_options.gpu_threefry_kernel():
      raise RuntimeError("boom")
  assert _flag() == before


def test_users_environment_choice_wins(fake_gpu, monkeypatch):
  monkeypatch.setenv(compile_options.THREEFRY_FLAG.upper(), "0")
  before = _flag()
  with compile_options.gpu_threefry_kernel():
    assert _flag() == before


def test_step_tracing_is_the_identity_by_default():
  step = lambda state, batch: (state, {})  # noqa: E731
  assert compile_options.step_tracing(common.base_config())(step) is step
  assert compile_options.step_tracing({})(step) is step


def test_cacheable_programs_must_be_a_bool():
  with pytest.raises(errors.ConfigError, match="config.cacheable_programs must be True or False"):
    compile_options.step_tracing({"cacheable_programs": "yes"})


def test_cacheable_steps_hold_no_onednn_call_when_traced_in_another_thread():
  # The warm-up thread traces the step: the wrapper, not the caller's context, decides.
  import threading  # pylint: disable=g-import-not-at-top
  from unittest import mock  # pylint: disable=g-import-not-at-top

  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jaxcompress.ops import conv as conv_ops  # pylint: disable=g-import-not-at-top
  from jaxcompress.ops import onednn_conv  # pylint: disable=g-import-not-at-top
  if not onednn_conv.available():
    pytest.skip("oneDNN convolutions are not available in this process")

  def loss(lhs, rhs):
    out = conv_ops.conv_general_dilated(lhs, rhs, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(out ** 2)

  lhs, rhs = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
  target = f'custom_call_target="{onednn_conv.CUSTOM_CALL_TARGET}"'
  texts = {}

  def compile_in_thread(name, fn):
    texts[name] = jax.jit(jax.grad(fn)).lower(lhs, rhs).compile().as_text()

  cacheable = compile_options.step_tracing({"cacheable_programs": True})(loss)
  with mock.patch.object(conv_ops.jax, "device_count", return_value=1), \
      mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
    for name, fn in (("plain", loss), ("cacheable", cacheable)):
      thread = threading.Thread(target=compile_in_thread, args=(name, fn))
      thread.start()
      thread.join()
  assert target in texts["plain"]
  assert target not in texts["cacheable"]


def test_engine_traces_steps_hooks_and_evaluators_through_step_tracing(tmp_path, monkeypatch):
  wrapped = []
  real = compile_options.step_tracing

  def spy(config):
    wrap = real(config)
    return lambda fn: (wrapped.append(getattr(fn, "__name__", "")), wrap(fn))[1]

  monkeypatch.setattr(compile_options, "step_tracing", spy)
  cfg = loop_test.toy_config(num_epochs=1, cacheable_programs=True)
  out = loop.run(cfg, str(tmp_path))
  assert int(out["state"].step) == 4
  assert sorted(wrapped) == ["eval_step", "on_epoch_start", "train_step"]  # hook, evaluator


def test_cacheable_runs_compile_without_ynnpack_fusions(monkeypatch):
  from jaxcompress.ops import xla_cpu  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "cpu" or not xla_cpu.jaxlib_checked():
    pytest.skip("the option is set for the checked jaxlib's CPU backend only")
  cacheable = {"cacheable_programs": True}
  assert compile_options.cacheable_compiler_options({}) == {}
  assert compile_options.cacheable_compiler_options(cacheable) == {
      compile_options.YNN_FUSION_OPTION: ""}
  assert compile_options.step_compiler_options(cacheable) == {
      compile_options.YNN_FUSION_OPTION: ""}
  # The config's own options win; a user's XLA_FLAGS choice of fusions is left alone.
  overridden = {"cacheable_programs": True,
                "compiler_options": {compile_options.YNN_FUSION_OPTION:
                                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}}
  assert compile_options.step_compiler_options(overridden) == overridden["compiler_options"]
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=+individual_dot")
  assert compile_options.cacheable_compiler_options(cacheable) == {}
  # What the option does: a matmul-and-reduce program loses its YNNPACK fusions.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def fn(x):
    return (x @ x).sum(0)

  def ynn_fusions(options):
    text = jax.jit(fn, compiler_options=options).lower(jnp.ones((64, 64))).compile().as_text()
    return text.count("__ynn_fusion")

  if ynn_fusions(None) == 0:
    pytest.skip("this XLA:CPU does not fuse the program into YNNPACK by default")
  assert ynn_fusions(dict(compile_options.CACHEABLE_CPU_OPTIONS)) == 0
