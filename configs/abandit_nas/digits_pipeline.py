"""ABanditNAS (Chen et al., ECCV 2020, arXiv 2008.00698) on digits in one command: search, then retrain the found cell.

Stage "search" is configs/abandit_nas/digits_search.py; stage "retrain" is
configs/abandit_nas/digits_eval.py with the genotype the search wrote (<workdir>/search/genotype.json,
handed over by `paths_from`). Each stage is an ordinary run in <workdir>/<stage>/; rerunning the
command skips the finished search and resumes the retraining.
Command:
  python -m launch.main --config=configs/abandit_nas/digits_pipeline.py --workdir=/tmp/abandit_nas_pipeline
Hardware: any CPU (2 cores); see each stage's config for its wall time.
Expected: the retrain stage's robust table (clean, FGSM, MI-FGSM, PGD-7, PGD-20) in <workdir>/retrain/robust_eval.md.
Variants: `:quick` (both stages in their quick form).
"""
from configs import common
from configs.abandit_nas import digits_eval, digits_search


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  variant = "quick" if args.quick else None
  return common.search_then_retrain(digits_search.get_config(variant),
                                    digits_eval.get_config(variant))
