"""``diffuscope classifier``: train the feature classifier the quality metrics use (FD, KID, prompt accuracy)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    p = sub.add_parser("classifier", help="train the classifier behind the quality metrics",
                       description="Train a small CNN classifier on the TRAIN split of a data set and measure it on "
                                   "the held-out TEST split. Its penultimate features are the space in which FD, KID "
                                   "and precision/recall are measured. Writes DIR/classifier.safetensors and "
                                   "DIR/classifier.json; by convention DIR = RUN_DIR/classifier.")
    p.add_argument("--data", required=True, type=types.name,
                   help="digits | mnist | PATH (the data set the model was trained on)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. RUN_DIR/classifier")
    p.add_argument("--epochs", type=types.int_range(1, 10_000, "epochs"),
                   help="passes over the train split (default: about "
                                                               "24,000 images seen, 5..30 epochs)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="initialisation and data-order seed "
                                                                          "(default: 0)")
    p.add_argument("--image-size", type=types.image_size, help="resize the data to the model's image size "
                                                                 "(8..64; default: native)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.io.outputs import prepare_out
    from diffuscope.metrics import ClassifierTraining, train_classifier

    args.out = prepare_out(args.out, "classifier")
    info = train_classifier(args.data, args.out, image_size=args.image_size,
                            training=ClassifierTraining(epochs=args.epochs, seed=args.seed), progress=not args.quiet)
    worst = min(range(info.num_classes), key=lambda c: info.per_class_accuracy[c]
                if info.per_class_accuracy[c] == info.per_class_accuracy[c] else 2.0)
    print(f"held-out accuracy {info.accuracy:.2%} on {info.n_test} {info.data} test images "
          f"(trained on {info.n_train}, {info.train['epochs']} epochs, {info.train_time_s:.0f} s); "
          f"weakest class {info.class_names[worst]!r} {info.per_class_accuracy[worst]:.2%}")
    print(f"classifier: {args.out}")
    return 0
