"""Quality metrics in the feature space of a classifier diffuscope trains itself (no Inception/CLIP offline).

    info = train_classifier("mnist", "RUN_DIR/classifier")        # held-out accuracy in info.accuracy
    clf = load_classifier(require_classifier("RUN_DIR"))           # RUN_DIR/classifier, or a hint to train one
    test = load_dataset("mnist", split="test")
    split = split_real(test, 500, seed=0)                          # reference + a disjoint real stand-in
    ref = embed(clf, split.reference.images)                       # once; reused for every sweep cell
    report = compute_metrics(samples, prompts, clf, ref)          # FD, KID, precision/recall, density/coverage,
                                                                   #   prompt accuracy, bootstrap intervals
    floor = real_floor(clf, test, 500, seed=0)                     # the same reference, real images as "generated"
    conv = convergence(samples_k_steps, samples_reference, clf)   # RMSE to a high-NFE sample from the same noise

Modules: classifier (net, save/load), classifier_train, locate (run-folder conventions), distances (FD, KID),
manifold (precision/recall, density/coverage), accuracy, convergence, stats (bootstrap), quality (one report),
floor (real vs real), retrieval (pixel-space nearest real image, colour histograms, hue: colour images with one
real image per prompt, e.g. emoji).
"""

from diffuscope.metrics.accuracy import PromptAccuracy, prompt_accuracy
from diffuscope.metrics.classifier import (
    INFO_FILE,
    WEIGHTS_FILE,
    Classifier,
    ClassifierConfig,
    ClassifierInfo,
    ClassifierNet,
    load_classifier,
    save_classifier,
)
from diffuscope.metrics.classifier_train import ClassifierTraining, train_classifier
from diffuscope.metrics.convergence import Convergence, convergence
from diffuscope.metrics.distances import (
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    kernel_distance,
    mmd2_unbiased,
)
from diffuscope.metrics.floor import RealSets, RealSplit, real_floor, real_sets, split_real
from diffuscope.metrics.locate import find_classifier, require_classifier
from diffuscope.metrics.manifold import Manifold, density_coverage, manifold_metrics, precision_recall
from diffuscope.metrics.quality import (
    Embedding,
    MetricOptions,
    QualityReport,
    compute_metrics,
    embed,
    evaluate,
    metric_options,
)
from diffuscope.metrics.retrieval import (
    Retrieval,
    RetrievalGallery,
    colour_histogram,
    histogram_distance,
    mean_hue,
    retrieval_ceiling,
)
from diffuscope.metrics.stats import (
    Interval,
    accuracy_interval,
    bootstrap_ci,
    fd_interval,
    kid_interval,
    paired_difference_ci,
)

__all__ = [
    "INFO_FILE",
    "WEIGHTS_FILE",
    "Classifier",
    "ClassifierConfig",
    "ClassifierInfo",
    "ClassifierNet",
    "ClassifierTraining",
    "Convergence",
    "Embedding",
    "Interval",
    "Manifold",
    "MetricOptions",
    "PromptAccuracy",
    "QualityReport",
    "RealSets",
    "RealSplit",
    "Retrieval",
    "RetrievalGallery",
    "accuracy_interval",
    "bootstrap_ci",
    "colour_histogram",
    "compute_metrics",
    "convergence",
    "density_coverage",
    "embed",
    "evaluate",
    "fd_interval",
    "find_classifier",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "histogram_distance",
    "kernel_distance",
    "kid_interval",
    "load_classifier",
    "manifold_metrics",
    "mean_hue",
    "metric_options",
    "mmd2_unbiased",
    "paired_difference_ci",
    "precision_recall",
    "prompt_accuracy",
    "real_floor",
    "real_sets",
    "require_classifier",
    "retrieval_ceiling",
    "save_classifier",
    "split_real",
    "train_classifier",
]
