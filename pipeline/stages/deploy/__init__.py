"""The deploy stage, by concern:

values     (pure) the image per service, the generated values, the deploy hash
target     the environment's kubeconfig/context, its Helm release (ReleaseTarget), the deploy lock
prepare    namespace, Secret, local volumes, local infra — what Helm needs before it runs
recovery   pending releases of killed runs, rollback after a failure, `invoke rollback`
rollout    the deploy: upgrade, wait, verify, record; deploy_release / verify_release / rollback_release
canary     the canary strategy; bluegreen: the blue-green strategy; progressive: what they share (state, analysis)
diagnosis  warning events and failing pods' logs
status     what runs: one observation (revision, images, readiness) and its summary
drift      does the cluster run what was recorded? deploy_holds (resume check), drift_report (invoke status)
commands   the task layer (`invoke deploy|rollback|status`)
"""

from pipeline.stages.deploy.drift import deploy_holds
from pipeline.stages.deploy.rollout import DeployResult, deploy_release, rollback_release, verify_release
from pipeline.stages.deploy.status import release_status
from pipeline.stages.deploy.target import DEFAULT_TIMEOUT_S
from pipeline.stages.deploy.values import CHART, ImageChoice, choose_images, deploy_hash, image_values, resource_name

# The names other packages use (the pre-split module's public surface).
__all__ = ["CHART", "DEFAULT_TIMEOUT_S", "DeployResult", "ImageChoice", "choose_images", "deploy_hash", "deploy_holds",
           "deploy_release", "image_values", "release_status", "resource_name", "rollback_release",
           "verify_release"]
