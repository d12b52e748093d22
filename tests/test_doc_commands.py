"""The manual's commands, run as printed, so that the manual cannot drift from the code.

Every fenced block of README.md, Instructions.md, docs/*.md and bench/README.md
that shows commands has a marker on the line before it:

    <!-- doc-commands: run -->
    <!-- doc-commands: run, except "PREFIX" (REASON) -->   (commands starting with PREFIX)
    <!-- doc-commands: not run (REASON) -->
    <!-- ... tests/test_x.py runs it ... -->               (another test runs the block)

The blocks to run of each document are run in order in one copy of the project,
as a user types them: a block starts in the project folder and `cd` moves within
it; `python X.py` of a script in code/ runs from code/; a model_server.py
command, which stays in the foreground, starts the server in the background on
free ports, and later commands (a second terminal) go to it: their ports
(8501/8500, or the ones the server command names) are rewritten to its ports,
and `serving_request.py` without `--server` is given it. `/tmp/smoke` is a
folder of the copy. A `$ ` command followed by output must print output of the
same shape: the same lines with any numbers (JSON: the same structure), so that
the trained model's figures of the manual hold for the smoke model's run.

The smoke model is the one the quick check of Instructions.md section 4
trains (1,000 images, one epoch).
"""

import contextlib
import doctest
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server_fixtures import STARTUP_SECONDS, copy_version

from mnist_serving import config
from mnist_serving.server_process import ModelServerProcess

DOCUMENTS = ("README.md", "Instructions.md", "docs/model_server.md", "bench/README.md")
MARKER = re.compile(r"<!--\s*doc-commands:\s*(.*?)\s*-->")
RUN_ELSEWHERE = re.compile(r"<!--.*?(tests/\w+\.py) runs it.*?-->")
EXCEPT = re.compile(r'except "([^"]+)" \(([^)]+)\)')
NOT_RUN = re.compile(r"not run \(([^)]+)\)$")
# The first word of a command line (after VARIABLE=value assignments).
COMMAND_WORDS = {
    "python",
    "python3",
    "make",
    "cd",
    "curl",
    "docker",
    "kubectl",
    "kustomize",
    "git",
    "source",
    "sudo",
    "apt-get",
    "nice",
    "sed",
    "echo",
    "rm",
    "pip",
    "bash",
    "../.venv/bin/python",
    ".venv/bin/python",
}
# Blocks not run that carry no marker, by document and first command: the
# photo bench's section is kept as one verbatim block, edited with the bench itself.
UNMARKED_NOT_RUN = {
    ("bench/README.md", "python bench/photo_bench.py"): (
        "a benchmark: minutes of both cores; tests/test_photo_bench.py runs it on a few photos"
    ),
}
QUICK_CHECK_TRAINING = "python model_trainer.py --epochs 1 --limit 1000"
SCRIPT_ERROR = re.compile(r"^\S+\.py: error:")
# TensorFlow's and absl's start-up lines, which no sample of the manual shows.
NOISE = re.compile(r"^(WARNING: All log messages|[IWE]\d{4} |\S+\.cc:\d+\])")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


@dataclass
class Command:
    text: str
    line: int
    output: list[str] | None = None  # shown after a `$ ` prompt


@dataclass
class Block:
    document: str
    line: int
    marker: str  # the comment before the fence, or ""
    language: str
    lines: list[str]
    commands: list[Command] = field(default_factory=list)
    python: bool = False

    @property
    def where(self):
        return f"{self.document}:{self.line}"


def is_complete(text):
    """Whether a shell command is whole: no open quote, no trailing backslash."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def starts_a_command(line):
    words = line.split()
    return bool(words) and (words[0] in COMMAND_WORDS or bool(re.match(r"^[A-Z_]+=", words[0])))


def read_commands(block):
    """The commands of a shell block, with the output shown after each `$ ` prompt."""
    prompted = any(line.startswith("$ ") for line in block.lines)
    commands, index = [], 0
    while index < len(block.lines):
        line = block.lines[index]
        text = line[2:] if prompted and line.startswith("$ ") else line
        if (prompted and not line.startswith("$ ")) or not (prompted or starts_a_command(line)):
            index += 1
            continue
        start = index
        while not is_complete(text) and index + 1 < len(block.lines):
            index += 1
            text += "\n" + block.lines[index]
        command = Command(text, block.line + 1 + start)
        index += 1
        if prompted:
            output = []
            while index < len(block.lines) and not block.lines[index].startswith("$ "):
                output.append(block.lines[index])
                index += 1
            command.output = [line for line in output if line.strip()]
        commands.append(command)
    return commands


def read_blocks(document):
    """The fenced blocks of a document, each with the comment line before it."""
    lines = (config.PROJECT_DIR / document).read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = lines.index("```", index + 1)
        marker = lines[index - 1] if index and lines[index - 1].startswith("<!--") else ""
        block = Block(document, index + 1, marker, fence.group(1), lines[index + 1 : end])
        block.python = block.language == "python" or any(
            line.startswith(">>> ") for line in block.lines
        )
        if not block.python:
            block.commands = read_commands(block)
        blocks.append(block)
        index = end + 1
    return blocks


def blocks_with_commands(document):
    return [block for block in read_blocks(document) if block.python or block.commands]


def plan(block):
    """('run', {prefix: reason}) | ('not run', reason) | ('run by', test file); or fails."""
    elsewhere = RUN_ELSEWHERE.search(block.marker)
    if elsewhere:
        return "run by", elsewhere.group(1)
    for (document, prefix), reason in UNMARKED_NOT_RUN.items():
        if block.document == document and block.commands[0].text.startswith(prefix):
            return "not run", reason
    marker = MARKER.search(block.marker)
    assert marker, f"{block.where}: a block of commands without a doc-commands marker"
    words = marker.group(1)
    not_run = NOT_RUN.match(words)
    if not_run:
        return "not run", not_run.group(1)
    assert words == "run" or words.startswith("run, except "), f"{block.where}: {words!r}"
    return "run", dict(EXCEPT.findall(words))


def all_blocks():
    return [block for document in DOCUMENTS for block in blocks_with_commands(document)]


def test_every_block_of_commands_is_run_or_says_why_not():
    """Each block is run here, by a named test, or marked not run with its reason."""
    not_run = []
    for block in all_blocks():
        kind, detail = plan(block)
        if kind == "run by":
            assert (config.PROJECT_DIR / detail).is_file(), f"{block.where}: no {detail}"
        elif kind == "not run":
            assert len(detail) > 10, f"{block.where}: say why it is not run"
            not_run.append(f"{block.where}: {block.lines[0]} ({detail})")
        else:
            assert not block.python or not detail, block.where
            for prefix in detail:
                assert any(command.text.startswith(prefix) for command in block.commands), (
                    f'{block.where}: no command starts with "{prefix}"'
                )
    # The list a reader of the test's output sees (pytest -rA or -s).
    print("Not run:", *not_run, sep="\n  ")
    assert not_run, "docker and the full training are never run here"


def test_markers_stand_before_blocks_of_commands():
    """A marker before a block that shows no command would claim a run that never happens."""
    for document in DOCUMENTS:
        for block in read_blocks(document):
            if MARKER.search(block.marker):
                assert block.python or block.commands, f"{block.where}: no command in it"


def test_the_commands_are_found_as_a_reader_reads_them():
    blocks = {block.where: block for block in blocks_with_commands("README.md")}
    commands = [command.text for block in blocks.values() for command in block.commands]
    assert "cd code" in commands
    assert "python serving_request.py -i ../test_images/image_2.png -d True -p True" in commands
    prompted = [
        command for block in blocks.values() for command in block.commands if command.output
    ]
    assert prompted[0].output[-1].startswith("per class:")


# Running them.


def shape(line):
    """A line with its numbers and runs of spaces made alike."""
    return " ".join(NUMBER.sub("N", line).split())


def structure(value):
    """A JSON value's keys and types (not its values), lists by their first item."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [structure(value[0])] if value else []
    return type(value).__name__.replace("int", "float")  # JSON has numbers


def as_json(lines):
    try:
        return json.loads("\n".join(lines))
    except ValueError:
        return None


def assert_same_shape(shown, printed, where):
    """`printed` has the shape of the manual's `shown` output (`...` skips lines)."""
    expected_json = as_json(shown)
    if expected_json is not None:
        printed_json = as_json(printed)
        assert printed_json is not None, f"{where}: not JSON:\n" + "\n".join(printed)
        assert structure(printed_json) == structure(expected_json), where
        return
    wanted = [shape(line) for line in shown if line.strip() not in ("...", "")]
    got = [shape(line) for line in printed if line.strip()]
    if len(wanted) < len([line for line in shown if line.strip()]):
        remaining = iter(got)  # cut with "...": the shown lines, in order, among the printed
        missing = [line for line in wanted if line not in remaining]
        assert not missing, f"{where}: not printed: {missing}\n" + "\n".join(printed)
    else:
        assert got == wanted, f"{where}: printed\n" + "\n".join(printed)


def shell_path():
    """PATH with the tests' venv first: `python` in a command is the venv's."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


class Sandbox:
    """A copy of the project in which the manual's commands run."""

    def __init__(self, root):
        self.root = root
        shutil.copytree(
            config.CODE_DIR,
            root / "code",
            ignore=shutil.ignore_patterns("cnnModel*", "__pycache__", ".*"),
        )
        for name in ("data", "test_images", "serving_config", "web", "figures", "Makefile"):
            (root / name).symlink_to(config.PROJECT_DIR / name)
        (root / ".venv").symlink_to(sys.prefix)  # the venv that runs the tests
        (root / "smoke").mkdir()
        # curl's progress meter (stderr, when not a terminal) is no part of the samples.
        (root / ".curlrc").write_text("--silent\n--show-error\n")
        self.done = {}  # (folder, command) -> output, for commands run once for all

    def run(self, command, folder, timeout=900):
        """Runs one shell command line; returns (exit status, its output lines)."""
        key = (folder, command)
        if key in self.done:
            return 0, self.done[key]
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, PATH=shell_path(), PYTHONUNBUFFERED="1", CURL_HOME=str(self.root)),
        )
        lines = [
            line for line in (result.stdout + result.stderr).splitlines() if not NOISE.match(line)
        ]
        return result.returncode, lines

    def rewrite(self, command, ports):
        """The command with the copy's paths and the running server's ports."""
        command = command.replace("/tmp/smoke", str(self.root / "smoke"))
        for shown, actual in ports.items():
            command = command.replace(f"localhost:{shown}", f"127.0.0.1:{actual}")
        return command


def quick_check_commands():
    for block in blocks_with_commands("Instructions.md"):
        texts = [command.text for command in block.commands]
        if any(text.startswith(QUICK_CHECK_TRAINING) for text in texts):
            return texts
    raise AssertionError("no quick check in Instructions.md section 4")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The copy, with the quick check's model as code/cnnModel.h5 and versions 1 and 2."""
    return trained_sandbox(tmp_path_factory.mktemp("project"))


def trained_sandbox(root):
    box = Sandbox(root)
    code = box.root / "code"
    for text in quick_check_commands():
        if "model_trainer.py" in text or "export_model.py" in text:
            command = box.rewrite(text, {})
            status, lines = box.run(command, code)
            assert status == 0, "\n".join(lines[-30:])
            box.done[(code, command)] = lines
    for name in ("cnnModel.h5", "cnnModel.metrics.json"):
        shutil.copyfile(box.root / "smoke" / name, code / name)
    export = box.root / "smoke" / config.MODEL_NAME / "1"
    for version in (1, 2):  # the config file's labels name both
        copy_version(export, box.root / config.MODEL_NAME, version)
    return box


class Walk:
    """One document's blocks run in order, with the server its commands started."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.server = None
        self.ports = {}

    def start_server(self, command, folder):
        """Starts `python [code/]model_server.py FLAGS` as printed, on free ports."""
        shown_rest = re.search(r"--rest_api_port[= ](\d+)", command)
        shown_grpc = re.search(r"--port[= ](\d+)", command)
        command = re.sub(r"\s*--(rest_api_port|port)[= ]\d+", "", command)
        python, script, *flags = shlex.split(command.replace("\\\n", " "), comments=True)
        assert python == "python", command
        self.stop_server()
        # The server inherits the working folder its relative paths are read from.
        with contextlib.chdir(folder):
            self.server = ModelServerProcess(
                [*flags, "--rest_api_port=0", "--port=0"], script=folder / script
            )
        port = self.server.wait_until_ready(STARTUP_SECONDS)
        assert port, f"{command}: the server did not start:\n{self.server.log}"
        self.ports = {
            shown_rest.group(1) if shown_rest else "8501": port,
            shown_grpc.group(1) if shown_grpc else "8500": self.server.grpc_port,
        }

    def stop_server(self):
        if self.server:
            server, self.server = self.server, None
            assert server.stop() == 0, server.log

    def client_command(self, command):
        if "serving_request.py" not in command or "--server" in command or not self.ports:
            return command
        command = re.sub(r"\s+#.*$", "", command)
        rest, grpc = self.ports.get("8501"), self.ports.get("8500")
        if "--protocol grpc" in command:
            return f"{command} --server 127.0.0.1:{grpc}"
        return f"{command} --server http://127.0.0.1:{rest}"

    def run_block(self, block, skipped):
        if block.python:
            return self.run_python(block)
        folder = self.sandbox.root
        for command in block.commands:
            where = f"{block.document}:{command.line}"
            if any(command.text.startswith(prefix) for prefix in skipped):
                continue
            text = self.sandbox.rewrite(command.text, self.ports)
            script = re.match(r"^python (\w+\.py)\b", text)
            here = folder
            if script and (self.sandbox.root / "code" / script.group(1)).is_file():
                here = self.sandbox.root / "code"
            if text.startswith("cd "):
                folder = (folder / text.split()[1]).resolve()
                continue
            if "model_server.py" in text and "--help" not in text:
                self.start_server(text, here)
                continue
            status, printed = self.sandbox.run(self.client_command(text), here)
            fails = bool(command.output) and any(SCRIPT_ERROR.match(x) for x in command.output)
            assert (status != 0) == fails, f"{where}: exit status {status}\n" + "\n".join(printed)
            if command.output:
                assert_same_shape(command.output, printed, where)

    def run_python(self, block):
        """A `>>>` session: each example run in order, its shown result of the same shape."""
        source = "\n".join(block.lines)
        examples = doctest.DocTestParser().get_examples(source)
        lines = []
        for example in examples:
            code = self.sandbox.rewrite(example.source, self.ports)
            if example.want:
                code = f"print(repr(eval({code.strip()!r})))"
            lines.append(code.rstrip("\n"))
        result = subprocess.run(
            [sys.executable, "-c", "\n".join(lines)],
            cwd=self.sandbox.root / "code",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{block.where}:\n{result.stderr[-3000:]}"
        shown = [line for example in examples for line in example.want.splitlines()]
        assert_same_shape(shown, result.stdout.splitlines(), block.where)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_commands_of_the_manual_run_as_printed(sandbox, document):
    walk = Walk(sandbox)
    ran = 0
    try:
        for block in blocks_with_commands(document):
            kind, detail = plan(block)
            if kind == "run":
                walk.run_block(block, detail)
                ran += 1
    finally:
        walk.stop_server()
    if document in ("README.md", "Instructions.md"):
        assert ran, f"no block of {document} was run"


def heading_anchors(path):
    """The anchors GitHub gives a Markdown file's headings."""
    anchors = set()
    in_fence = False
    for line in path.read_text().splitlines():
        in_fence ^= line.startswith("```")
        if not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_links_between_the_documents_reach_their_files_and_headings():
    for document in DOCUMENTS:
        path = config.PROJECT_DIR / document
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{document}: {target}"
            if anchor:
                assert anchor in heading_anchors(linked), f"{document}: {target}"
