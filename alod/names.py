"""The MLflow names every part shares (tracking URI, experiment, registered models, alias).

Kept free of heavy imports: parameter declarations and `alod --help` read them without loading
MLflow or torch. `alod.tracking` re-exports them."""

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "alod"
PRETRAINED_MODEL = "alod-pretrained"
DETECTOR_MODEL = "alod-detector"
CHAMPION = "champion"
RUN_ID_ENV = "ALOD_RUN_ID"  # how torchrun workers learn the run that rank 0 writes to
