# TensorFlow Serving image with the digit classifier baked in.
#
#   docker build -t digit_clf_container .
#   docker run -p 8500:8500 -p 8501:8501 -t digit_clf_container
#   curl http://localhost:8501/v1/models/my_digit_classifier
#
# The tag matches the TensorFlow the model is exported with (requirements.txt
# pins tensorflow==2.21.0): a SavedModel is only guaranteed to load in a
# TensorFlow Serving of the same or a newer version. This line is the one
# place the tag is set; override it with
#   docker build --build-arg TF_SERVING_VERSION=<tag> .
ARG TF_SERVING_VERSION=2.21.0
FROM tensorflow/serving:${TF_SERVING_VERSION}

# The image's entrypoint runs
#   tensorflow_model_server --port=8500 --rest_api_port=8501 \
#     --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
# with MODEL_BASE_PATH=/models, so the model goes to /models/my_digit_classifier
# and every version folder (1/, 2/, ...) under it is served, the highest by default.
# .dockerignore lets only the version folders in (no hidden staging folders).
ENV MODEL_NAME=my_digit_classifier
COPY my_digit_classifier /models/my_digit_classifier
RUN ls /models/my_digit_classifier | grep -qE '^[0-9]+$' || { \
      echo "No exported version in my_digit_classifier/: run code/export_model.py before docker build." >&2; \
      exit 1; }

# Optional configs, used only when named on the command line, e.g.
#   docker run -p 8501:8501 -t digit_clf_container \
#     --enable_batching=true --batching_parameters_file=/models/config/batching.config \
#     --monitoring_config_file=/models/config/monitoring.config
# A model config with version labels also needs
#   --allow_version_labels_for_unavailable_models=true
# (TF Serving assigns labels before the versions have loaded).
COPY serving_config /models/config

# 8500: gRPC, 8501: REST (both already exposed by the base image).
EXPOSE 8500 8501
