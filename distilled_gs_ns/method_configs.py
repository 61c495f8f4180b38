"""nerfstudio entry points (`nerfstudio.method_configs`): one MethodSpecification per method.

Kept to config construction only: importing this module builds no model and touches no data.
"""

from nerfstudio.plugins.types import MethodSpecification

from distilled_gs_ns.configs.mcmc import mcmc as mcmc_config
from distilled_gs_ns.configs.momentum_gs import momentum_gs as momentum_gs_config
from distilled_gs_ns.configs.prune_finetune import prune_finetune as prune_finetune_config
from distilled_gs_ns.configs.student import student as student_config
from distilled_gs_ns.configs.teachers import dropout_teacher, perturbed_teacher, standard_teacher

teacher = MethodSpecification(
    config=standard_teacher(),
    description="Distilled-3DGS standard teacher: 3DGS with splatfacto's recipe, CPU and CUDA",
)
teacher_perturbed = MethodSpecification(
    config=perturbed_teacher(),
    description="Distilled-3DGS teacher with scheduled random perturbation of Gaussians",
)
teacher_dropout = MethodSpecification(
    config=dropout_teacher(),
    description="Distilled-3DGS teacher trained with random Gaussian dropout",
)
student = MethodSpecification(
    config=student_config(),
    description="Distilled-3DGS student: a splat with ~12% of the teachers' Gaussians, distilled from their renders",
)
mcmc = MethodSpecification(
    config=mcmc_config(),
    description="3DGS-MCMC (gsplat's MCMCStrategy, CPU and CUDA) capped at --pipeline.model.max-gaussians",
)
prune_finetune = MethodSpecification(
    config=prune_finetune_config(),
    description="Prune a trained teacher (--pipeline.teachers) to a budget by importance, then fine-tune on ground truth",
)
momentum_gs = MethodSpecification(
    config=momentum_gs_config(),
    description="Momentum-GS: block-wise anchor splats with a momentum-distilled shared decoder, one or many devices",
)
