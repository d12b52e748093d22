"""Train, export, serve and query a handwritten-digit classifier.

The modules of this package hold the logic behind the command-line scripts
of `code/`: `data` (MNIST), `model` (the two-branch CNN), `training`,
`figures`, `export` (SavedModel for TensorFlow Serving) with `savedmodel` and
`warmup` (the version folders both servers read), `preprocessing` (OpenCV,
photos to MNIST form), `client` (TensorFlow Serving's REST API) and the
subpackage `serving` (a local server that speaks that API; the others never
import it).
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the
# output users care about; they can still ask for it with TF_CPP_MIN_LOG_LEVEL.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The Keras 3 code in this package is written for the TensorFlow backend.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
