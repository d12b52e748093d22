"""The Docker files as shipped would start: one image tag, labels allowed, a clean context.

Docker cannot run here; these checks read the files as Docker and TF Serving
would.
"""

import re

from mnist_serving import config

DOCKERFILE = (config.PROJECT_DIR / "Dockerfile").read_text()
COMPOSE = (config.PROJECT_DIR / "docker-compose.yml").read_text()
DOCKERIGNORE = (config.PROJECT_DIR / ".dockerignore").read_text()


def test_the_serving_image_tag_is_one_build_argument_with_its_default_in_the_dockerfile():
    lines = [line for line in DOCKERFILE.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG TF_SERVING_VERSION=2.21.0"
    assert lines[1] == "FROM tensorflow/serving:${TF_SERVING_VERSION}"
    # Compose passes the variable through and never repeats the default.
    assert re.search(r"args:\s*\n\s*#.*\n\s*- TF_SERVING_VERSION\n", COMPOSE)
    assert "2.21.0" not in COMPOSE


def test_every_model_config_with_labels_is_started_with_labels_allowed():
    for text in (COMPOSE, (config.PROJECT_DIR / "serving_config" / "models.config").read_text()):
        lines = text.splitlines()
        starts = [index for index, line in enumerate(lines) if "--model_config_file=" in line]
        assert starts
        for index in starts:
            nearby = "\n".join(lines[index : index + 3])
            assert "--allow_version_labels_for_unavailable_models=true" in nearby


def test_the_build_context_is_an_allowlist_of_version_folders_and_configs():
    rules = [line for line in DOCKERIGNORE.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert set(rules[1:]) == {
        "!my_digit_classifier/README.md",
        "!my_digit_classifier/[0-9]*",
        "!serving_config/",
    }


def test_a_build_without_an_exported_version_stops_with_a_clear_message():
    assert "No exported version in my_digit_classifier/: run code/export_model.py" in DOCKERFILE
