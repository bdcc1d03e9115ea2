"""DMAD as one staged run (arXiv 2011.08382): teacher -> search -> materialize -> fine-tune.

Stages, in order (`jaxcompress.train.stages`):
  * "teacher": the full-size GAN ("cyclegan" / "pix2pix"), since no teachers are released
    (SJLeo/DMAD#1 on GitHub); it is also what the students are compared with.
  * "search": the DMAD mask search ("dmad_cyclegan" / "dmad_pix2pix") from scratch, as the
    official `train.py --mask`, with the MACs target of the early stop.
  * "materialize": the searched generators cut down to really smaller ones
    (`jaxcompress.prune.materialize`); writes student.json / student.msgpack.
  * "distilled": fine-tuning of the pruned student with co-attention distillation from the
    teacher's G and D (`dmad_finetune_*`), discriminators inherited from the search.
  * "undistilled": the same fine-tuning budget with both distillation weights 0 (the comparison
    the report makes honestly, whichever wins).
  * "report": `<workdir>/dmad_report.json` with teacher/student MACs and parameters and the
    quality metric of teacher, distilled and undistilled students.

A teacher wider than the searched network (DMAD's Pix2Pix rows search from ngf 48 and distil from
the `--pretrain_ngf` 64 model, SJLeo/DMAD `models/Pix2Pix.py` `init_attention_distill`) is the
`teacher_generator` block: the teacher stage trains it, and the fine-tune and report stages use
it as their `model.generator`, since `dmad_finetune_*` builds the frozen teacher from that block
and the student from it with every width role given by student.json (so the student does not
depend on the block's own ngf).
"""
from __future__ import annotations

import ml_collections


def dmad_stages(base: ml_collections.ConfigDict, *, kind: str, teacher_epochs: tuple[int, int],
                search_epochs: tuple[int, int], finetune_epochs: tuple[int, int],
                dmad: dict, report_metric: str,
                teacher_generator: ml_collections.ConfigDict | None = None
                ) -> ml_collections.ConfigDict:
  """The staged config.

  Args:
    base: a "cyclegan" / "pix2pix" config (model, data, optim, gan).
    kind: "cyclegan" or "pix2pix".
    teacher_epochs, search_epochs, finetune_epochs: (n_epochs, n_epochs_decay) of each stage.
    dmad: the `config.dmad` block of search and fine-tune (lambda_mask, macs_target, ...).
    report_metric: the eval metric the report compares.
    teacher_generator: the teacher's `model.generator` block when it differs from the searched
      one (module docstring); None: the same network.

  Returns:
    The staged config.
  """
  def stage(method: str, epochs: tuple[int, int], teacher_net: bool = False
            ) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(base.to_dict())
    if teacher_net and teacher_generator is not None:
      c.model.generator = ml_collections.ConfigDict(teacher_generator.to_dict())
    c.method = method
    c.optim.n_epochs, c.optim.n_epochs_decay = epochs
    c.num_epochs = sum(epochs)
    c.dmad = ml_collections.ConfigDict(dict(dmad))
    c.dmad.report_metric = report_metric
    return c

  c = ml_collections.ConfigDict()
  c.stages = ml_collections.ConfigDict()
  c.stages.teacher = stage(kind, teacher_epochs, teacher_net=True)
  del c.stages.teacher["dmad"]
  c.stages.search = stage(f"dmad_{kind}", search_epochs)
  materialize = stage(f"dmad_{kind}", search_epochs)
  materialize.report = "dmad_materialize"
  materialize.inputs = ("search",)
  c.stages.materialize = materialize
  for name, distilled in (("distilled", True), ("undistilled", False)):
    s = stage(f"dmad_finetune_{kind}", finetune_epochs, teacher_net=True)
    s.paths_from = (("dmad.student", "materialize", "student.json"),
                    ("dmad.teacher", "teacher", ""))
    if not distilled:
      s.dmad.lambda_attention = 0.0
      s.dmad.lambda_discriminator = 0.0
    c.stages[name] = s
  report = stage(f"dmad_finetune_{kind}", finetune_epochs, teacher_net=True)
  report.report = "dmad_report"
  report.inputs = ("teacher", "distilled", "undistilled")
  report.paths_from = (("dmad.student", "materialize", "student.json"),)
  c.stages.report = report
  c.stage_order = ("teacher", "search", "materialize", "distilled", "undistilled", "report")
  return c
