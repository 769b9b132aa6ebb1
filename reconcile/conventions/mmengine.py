"""mmengine 0.10.7: ``mmengine.analysis.get_model_complexity_info``, predicting its ``flops``,
``activations`` and ``params`` per module (the numbers behind ``out_table`` and ``out_arch``).

``mmengine.analysis`` is fvcore 0.1.5's jit analysis copied into mmengine ("Modified from
fvcore"): the same ``_IGNORED_OPS``, the same flop handles (``FlopAnalyzer`` =
``FlopCountAnalysis``), the same activation handles (``ActivationAnalyzer`` =
``ActivationCountAnalysis``), the same ``parameter_count`` and the same "owner" scoping, so rows
nest in the same way (every row inclusive of its subtree). So its rules are fvcore's, written
once in ``reconcile.conventions.fvcore`` and used here, with this tool's name in every sentence;
a fix to the trace model there is a fix here. This is the one place a convention builds on
another: the dependency is the tools' own (mmengine vendored fvcore's files).

What differs, and why none of it changes a prediction:

* ``matmul_flop_jit`` accepts a 1-D operand (fvcore's asserts and indexes ``[-2]``, so fvcore
  fails on ``matrix @ vector`` where mmengine counts ``prod(A) * 1``, the MACs; both count a
  1-D first operand as ``k * n``).
* Unsupported-op and uncalled-module warnings go through ``MMLogger`` (``print_log``), not
  Python logging: data in the run's warnings, no count changes.
* ``get_model_complexity_info`` never calls ``eval()``, and the documentation analyses models
  as built, in training mode. The model's mode decides BatchNorm: with running statistics
  (eval) 2 per element with affine, 1 without; on batch statistics (training) 5 and 4. The
  training part above the eval count is the ``train_mode`` cause; ``num_batches_tracked += 1``
  is one more traced ``aten::add_`` per BatchNorm call (unsupported, counted as 0).
"""

from __future__ import annotations

from reconcile.conventions.base import RuleDoc
from reconcile.conventions.fvcore import FvcoreConvention


class MmengineConvention(FvcoreConvention):
    tool = "mmengine"
    rules = (
        RuleDoc("unit", "\"flops\" are multiply-adds (one fused MAC = one flop); bias adds never counted"),
        RuleDoc("mechanism", "fvcore 0.1.5's jit trace, copied: each traced op charged to its module and every "
                "ancestor (rows nest); FlopAnalyzer + ActivationAnalyzer, two traces"),
        RuleDoc("mode", "never calls eval(): the model is traced in the mode it is in (the documentation: training)"),
        RuleDoc("BatchNorm (aten::batch_norm)", "running statistics (eval) N * (2 if affine else 1); batch "
                "statistics (training) N * (5 if affine else 4), the extra 3 per element being train_mode; "
                "training also traces num_batches_tracked += 1 as an unsupported aten::add_; F.batch_norm by its "
                "own training argument, whatever the module's mode"),
        *(r for r in FvcoreConvention.rules if r.family not in ("unit", "mechanism", "BatchNorm (aten::batch_norm)")),
        RuleDoc("matmul with a 1-D operand", "counted, prod(A) * B[-1] with the vector as (k, 1) (fvcore fails on "
                "a 1-D second operand)"),
    )


CONVENTION = MmengineConvention()
