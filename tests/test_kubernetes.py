"""deploy/kubernetes/ agrees with the project: names, ports, paths, images, and real probe URLs.

No cluster runs here: the manifests are loaded with a YAML parser and checked
against config.py, serving_config/, the Dockerfiles and the scripts' own flag
parsers; the probes are asked of the real local server.
"""

import re
import shlex
from pathlib import Path

import export_model
import model_trainer
import pytest
import yaml
from server_fixtures import ServerProcess

from mnist_serving import config

DEPLOY_DIR = config.PROJECT_DIR / "deploy" / "kubernetes"
SERVING_LABELS = {
    "app.kubernetes.io/name": "digit-classifier",
    "app.kubernetes.io/component": "serving",
}
TRAINING_LABELS = {
    "app.kubernetes.io/name": "digit-classifier",
    "app.kubernetes.io/component": "training",
}
# Where the tensorflow/serving image looks for models (its MODEL_BASE_PATH).
SERVING_MODELS_DIR = "/models"


def load_manifests():
    """{kind: manifest} of every YAML file in deploy/kubernetes/ but the kustomization."""
    manifests = {}
    for path in sorted(DEPLOY_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in manifests, f"two {document['kind']} manifests"
            manifests[document["kind"]] = document
    return manifests


MANIFESTS = load_manifests()


def serving_container():
    [container] = MANIFESTS["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def tf_serving_version():
    """The default of the Dockerfile's `ARG TF_SERVING_VERSION=...`, checked to be its base."""
    dockerfile = (config.PROJECT_DIR / "Dockerfile").read_text()
    [version] = re.findall(r"^ARG TF_SERVING_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM tensorflow/serving:\$\{TF_SERVING_VERSION\}$", dockerfile, re.M)
    return version


def build_tag(dockerfile):
    """The image tag of the `docker build ... -t TAG` command a Dockerfile's comments give."""
    text = (config.PROJECT_DIR / dockerfile).read_text()
    [tag] = re.findall(r"docker build .*-t (\S+) \.", text)
    return tag


def probe_paths():
    container = serving_container()
    probes = ("startupProbe", "readinessProbe", "livenessProbe")
    return {name: container[name]["httpGet"]["path"] for name in probes}


def test_every_manifest_has_a_known_kind_and_api_version():
    assert {kind: manifest["apiVersion"] for kind, manifest in MANIFESTS.items()} == {
        "Deployment": "apps/v1",
        "Service": "v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
        "PersistentVolumeClaim": "v1",
        "TFJob": "kubeflow.org/v1",
    }


def test_the_kustomization_lists_every_serving_manifest():
    kustomization = yaml.safe_load((DEPLOY_DIR / "kustomization.yaml").read_text())
    files = {path.name for path in DEPLOY_DIR.glob("serving-*.yaml")}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_serving_objects_share_one_name_and_their_labels_select_the_pods():
    deployment = MANIFESTS["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == SERVING_LABELS
    assert deployment["spec"]["selector"]["matchLabels"] == SERVING_LABELS
    assert MANIFESTS["Service"]["spec"]["selector"] == SERVING_LABELS
    assert MANIFESTS["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == SERVING_LABELS
    target = MANIFESTS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert MANIFESTS[kind]["metadata"]["name"] == "digit-classifier-serving", kind
        assert MANIFESTS[kind]["metadata"]["labels"] == SERVING_LABELS, kind


def test_two_replicas_and_an_autoscaler_on_cpu_that_keeps_at_least_two():
    assert MANIFESTS["Deployment"]["spec"]["replicas"] == 2
    autoscaler = MANIFESTS["HorizontalPodAutoscaler"]["spec"]
    assert autoscaler["minReplicas"] == 2 < autoscaler["maxReplicas"]
    [metric] = autoscaler["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is measured against the request, which must therefore exist.
    assert serving_container()["resources"]["requests"]["cpu"]


def test_the_server_is_tensorflow_serving_at_the_dockerfiles_tag():
    assert serving_container()["image"] == f"tensorflow/serving:{tf_serving_version()}"


def test_ports_are_tensorflow_servings_own_from_config():
    ports = {port["name"]: port["containerPort"] for port in serving_container()["ports"]}
    assert ports == {"grpc": config.GRPC_PORT, "http": config.REST_PORT}
    service_ports = {port["name"]: port for port in MANIFESTS["Service"]["spec"]["ports"]}
    assert {name: port["port"] for name, port in service_ports.items()} == ports
    assert {name: port["targetPort"] for name, port in service_ports.items()} == {
        name: name for name in ports
    }
    annotations = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.REST_PORT)


def test_the_model_image_is_the_project_dockerfiles_and_lands_where_the_server_looks():
    pod = MANIFESTS["Deployment"]["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    # The image the Dockerfile's comment builds, with the model's version as its tag.
    repository, _, tag = init["image"].partition(":")
    assert repository == build_tag("Dockerfile").partition(":")[0] and tag
    dockerfile = (config.PROJECT_DIR / "Dockerfile").read_text()
    # The Dockerfile puts the export and the configs under /models ...
    assert f"COPY {config.MODEL_NAME} {SERVING_MODELS_DIR}/{config.MODEL_NAME}" in dockerfile
    assert f"COPY serving_config {SERVING_MODELS_DIR}/config" in dockerfile
    # ... the init container copies /models into the shared volume ...
    [shared] = init["volumeMounts"]
    assert init["command"] == ["cp", "-R", f"{SERVING_MODELS_DIR}/.", shared["mountPath"] + "/"]
    # ... which the server sees as /models, where it looks for MODEL_NAME.
    [mount] = serving_container()["volumeMounts"]
    assert mount["name"] == shared["name"] and mount["mountPath"] == SERVING_MODELS_DIR
    environment = {item["name"]: item["value"] for item in serving_container()["env"]}
    assert environment == {"MODEL_NAME": config.MODEL_NAME, "MODEL_BASE_PATH": SERVING_MODELS_DIR}
    assert [volume["name"] for volume in pod["volumes"]] == [mount["name"]]


def test_the_servers_config_files_are_the_projects():
    files = [
        Path(match.group(1))
        for match in map(re.compile(r"--\w+_file=(.+)").fullmatch, serving_container()["args"])
        if match
    ]
    assert files
    for path in files:
        assert path.parent == Path(SERVING_MODELS_DIR) / "config", path
        assert (config.PROJECT_DIR / "serving_config" / path.name).is_file(), path


def test_resources_are_sized_above_the_measured_resident_memory():
    resources = serving_container()["resources"]
    # bench/serving_bench.py: 852 MiB at the server's peak with one model loaded.
    measured_peak = 852 * 2**20
    assert parse_quantity(resources["requests"]["memory"]) >= measured_peak
    assert parse_quantity(resources["limits"]["memory"]) > parse_quantity(
        resources["requests"]["memory"]
    )


def parse_quantity(text):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


@pytest.fixture(scope="module")
def deployed_server(export_base):
    """The local server started with the Deployment's own flags, on the project's configs."""
    arguments = [
        argument.replace(f"{SERVING_MODELS_DIR}/config", str(config.PROJECT_DIR / "serving_config"))
        for argument in serving_container()["args"]
    ]
    with ServerProcess(
        f"--model_name={config.MODEL_NAME}", f"--model_base_path={export_base}", *arguments
    ) as server:
        yield server


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_the_model_status_url_of_the_rest_api(deployed_server, probe):
    container = serving_container()
    assert container[probe]["httpGet"]["port"] == "http"
    response = deployed_server.get(probe_paths()[probe])
    assert response.status_code == 200
    [version] = response.json()["model_version_status"]
    assert version["state"] == "AVAILABLE"


def test_the_prometheus_annotation_names_the_metrics_url(deployed_server):
    annotations = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    response = deployed_server.get(annotations["prometheus.io/path"])
    assert response.status_code == 200
    assert ":tensorflow:serving:request_count" in response.text


def training_replicas():
    return MANIFESTS["TFJob"]["spec"]["tfReplicaSpecs"]


def training_container(replica):
    [container] = training_replicas()[replica]["template"]["spec"]["containers"]
    return container


def commands(container):
    """[(script, arguments)] of a container's command, through `sh -c "a && b"` too."""
    command = container["command"]
    if command[:2] == ["sh", "-c"]:
        parts = [shlex.split(part) for part in command[2].split("&&")]
    else:
        parts = [command]
    return [(part[1], part[2:]) for part in parts if part[0] == "python"]


def test_the_tfjob_runs_a_chief_and_a_worker_in_the_operators_container():
    assert set(training_replicas()) == {"Chief", "Worker"}
    assert training_replicas()["Chief"]["replicas"] == 1
    for replica, spec in training_replicas().items():
        assert spec["template"]["metadata"]["labels"] == TRAINING_LABELS, replica
        container = training_container(replica)
        assert container["name"] == "tensorflow", replica
        assert container["image"] == build_tag("Dockerfile.train"), replica
        assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
            "tfjob-port": 2222
        }


def test_the_tfjob_commands_are_the_projects_scripts_with_flags_they_accept():
    trainer_arguments = {}
    for replica in training_replicas():
        for script, arguments in commands(training_container(replica)):
            assert (config.PROJECT_DIR / script).is_file(), script
            if script == "code/model_trainer.py":
                trainer_arguments[replica] = vars(model_trainer.parse_arguments(arguments))
            else:
                assert script == "code/export_model.py"
                exported = export_model.parse_arguments(arguments)
                assert exported.export_base.name == config.MODEL_NAME
    # Every worker trains with the same recipe; only where the chief writes differs.
    chief, worker = trainer_arguments["Chief"], trainer_arguments["Worker"]
    for where in ("output", "figures"):
        chief.pop(where), worker.pop(where)
    assert chief == worker


def test_only_the_chief_mounts_the_output_volume_where_it_writes():
    chief = training_replicas()["Chief"]["template"]["spec"]
    [volume] = chief["volumes"]
    claim = MANIFESTS["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["labels"] == TRAINING_LABELS
    [mount] = training_container("Chief")["volumeMounts"]
    assert mount["name"] == volume["name"]
    for _, arguments in commands(training_container("Chief")):
        for flag in ("--output", "--figures", "--model", "--export-base"):
            if flag in arguments:
                value = arguments[arguments.index(flag) + 1]
                assert value.startswith(mount["mountPath"] + "/"), (flag, value)
    assert "volumes" not in training_replicas()["Worker"]["template"]["spec"]


def test_the_training_image_is_built_from_requirements_and_code():
    dockerfile = (config.PROJECT_DIR / "Dockerfile.train").read_text()
    assert "COPY requirements.txt ." in dockerfile
    assert "RUN pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "COPY code/ code/" in dockerfile
    ignore = (config.PROJECT_DIR / "Dockerfile.train.dockerignore").read_text().splitlines()
    for needed in ("!requirements.txt", "!code/", "!data/mnist.npz"):
        assert needed in ignore
