"""The host agent's pure parts: docker argv (the contract's rules), env split, message, tar."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from distproc.agent.container import gpu_argv, run_argv
from distproc.agent.files import extract_tar, pack_tree, read_message
from distproc.agent.task import JobDir, TaskError, env_lines, parse_task
from tests.task_docs import task_doc


def tail_after_image(argv: list[str]) -> list[str]:
    return argv[argv.index("img:1") + 1 :]


def test_neither_entrypoint_nor_arguments_keeps_the_image_defaults() -> None:
    """No entrypoint, no arguments: nothing after the image, no --entrypoint."""
    argv = run_argv(parse_task(task_doc()), "/ml", "/env", [])
    assert "--entrypoint" not in argv
    assert tail_after_image(argv) == []


def test_entrypoint_only_replaces_entrypoint_and_cmd() -> None:
    """[E0, E1, E2] becomes --entrypoint E0 IMAGE E1 E2 (Docker clears CMD)."""
    argv = run_argv(parse_task(task_doc(entrypoint=["python3", "-u", "x.py"])), "/ml", None, [])
    assert argv[argv.index("--entrypoint") + 1] == "python3"
    assert tail_after_image(argv) == ["-u", "x.py"]


def test_arguments_only_keep_the_image_entrypoint() -> None:
    """Arguments alone replace CMD: they follow the image, no --entrypoint."""
    argv = run_argv(parse_task(task_doc(arguments=["--a", "1"])), "/ml", None, [])
    assert "--entrypoint" not in argv
    assert tail_after_image(argv) == ["--a", "1"]


def test_entrypoint_and_arguments() -> None:
    """Both: entrypoint words then arguments."""
    argv = run_argv(parse_task(task_doc(entrypoint=["sh", "-c"], arguments=["echo $0", "x"])), "/ml", None, [])
    assert argv[argv.index("--entrypoint") + 1] == "sh"
    assert tail_after_image(argv) == ["-c", "echo $0", "x"]


def test_container_identity_network_and_mount() -> None:
    """Named and labelled by job and algo, host network, algo hostname, add-host per algo, /opt/ml mount."""
    argv = run_argv(parse_task(task_doc()), "/work/ml", "/work/env", ["MULTI"])
    assert argv[argv.index("--name") + 1] == "distproc-j1-algo-2"
    assert "distproc.job=j1" in argv and "distproc.algo=algo-2" in argv
    assert argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("--hostname") + 1] == "algo-2"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--add-host"] == ["algo-1:10.0.0.1", "algo-2:10.0.0.2"]
    assert argv[argv.index("--volume") + 1] == "/work/ml:/opt/ml"
    assert argv[argv.index("--env-file") + 1] == "/work/env"
    assert argv[argv.index("--env") + 1] == "MULTI"


def test_gpu_flags_per_mode() -> None:
    """GPU hosts get --gpus or the nvidia runtime; CPU hosts get nothing."""
    assert gpu_argv(0, "gpus") == []
    assert gpu_argv("all", "gpus") == ["--gpus", "all"]
    assert gpu_argv(2, "gpus") == ["--gpus", "2"]
    assert gpu_argv("all", "runtime") == ["--runtime", "nvidia", "--env", "NVIDIA_VISIBLE_DEVICES=all"]
    assert gpu_argv(2, "runtime")[-1] == "NVIDIA_VISIBLE_DEVICES=0,1"


def test_env_values_with_newlines_are_inherited_not_written() -> None:
    """Docker's env-file cannot hold newlines, so such values go by inheritance."""
    lines, inherited = env_lines((("A", "x y"), ("B", "a\nb"), ("C", "q\r")))
    assert lines == ["A=x y"]
    assert inherited == ["B", "C"]


def test_bad_task_documents_are_refused_with_the_field() -> None:
    """A wrong version or a LocalPath outside /opt/ml/processing is a TaskError naming it."""
    with pytest.raises(TaskError, match="version"):
        parse_task(task_doc(version=99))
    with pytest.raises(TaskError, match="outside"):
        parse_task(task_doc(local_paths=["/opt/ml/processing/../../etc"]))
    with pytest.raises(TaskError, match="gpus"):
        parse_task(task_doc(gpus=True))


def test_message_is_cut_to_1024_chars_and_checked_whole(tmp_path: Path) -> None:
    """The message keeps 1024 characters (not bytes) and any bad byte anywhere invalidates it."""
    path = tmp_path / "message"
    path.write_text("é" * 3000, encoding="utf-8")
    assert read_message(str(path)) == ("é" * 1024, None)
    path.write_bytes(b"ok" * 1000 + b"\xff")
    assert read_message(str(path)) == (None, "is not valid UTF-8")
    assert read_message(str(tmp_path / "missing")) == (None, None)
    (tmp_path / "dir").mkdir()
    assert read_message(str(tmp_path / "dir")) == (None, "is a directory, not a regular file")


def test_pack_skips_symlinks_and_extract_refuses_escapes(tmp_path: Path) -> None:
    """Outputs never follow symbolic links; a tar member climbing out is refused."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("A")
    (tmp_path / "secret").write_text("S")
    os.symlink(tmp_path / "secret", src / "link")
    buffer = io.BytesIO()
    assert pack_tree(str(src), buffer) == (1, 1)
    buffer.seek(0)
    dest = tmp_path / "dest"
    assert extract_tar(buffer, str(dest)) == (1, 1)
    assert (dest / "sub" / "a.txt").read_text() == "A"
    assert not (dest / "link").exists()

    import tarfile

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as archive:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    evil.seek(0)
    with pytest.raises(ValueError, match="refusing"):
        extract_tar(evil, str(tmp_path / "d2"))
    assert not (tmp_path / "escape").exists()


def test_job_dir_maps_container_paths_and_refuses_escapes() -> None:
    """Container paths under /opt/ml map into the job folder; nothing else does."""
    jd = JobDir("/w/jobs/j/algo-1")
    assert jd.host_path("/opt/ml/processing/in") == "/w/jobs/j/algo-1/ml/processing/in"
    with pytest.raises(TaskError):
        jd.host_path("/etc/passwd")
    with pytest.raises(TaskError):
        jd.host_path("/opt/ml/../../etc")


def test_a_folder_watch_wakes_on_appends_and_renames_but_not_on_touches(tmp_path: Path) -> None:
    """The follower's inotify watch: readable after a change in the folder, quiet after drain."""
    import select

    from distproc.agent.dirwatch import DirWatch

    watched = tmp_path / "watched"
    watched.write_text("")
    log = tmp_path / "container.log"
    log.write_text("")
    watch = DirWatch.open(str(tmp_path))
    assert watch is not None, "inotify is there on Linux"

    def woke() -> bool:
        return bool(select.select([watch.fd], [], [], 0)[0])

    try:
        assert not woke()
        os.utime(watched)  # the pings' touch
        with open(watched, "a"):
            pass
        assert not woke()
        with open(log, "a") as fh:
            fh.write("a line\n")
        assert woke()
        watch.drain()
        assert not woke()
        (tmp_path / "result.json.tmp").write_text("{}")
        os.replace(tmp_path / "result.json.tmp", tmp_path / "result.json")
        assert woke()
    finally:
        watch.close()


def test_every_verb_of_the_agent_parses_with_only_its_own_parser_built() -> None:
    """main() builds only the running verb's parser; VERBS must name every verb there is."""
    import argparse

    from distproc.agent import cli

    full = cli.build_parser()
    choices = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(choices) == sorted(cli.VERBS)
    args = cli.build_parser("follow").parse_args(["follow", "/w/jobs/j/algo-1", "--log-offset", "7"])
    assert (args.verb, args.jobdir, args.log_offset, args.func) == ("follow", "/w/jobs/j/algo-1", 7, cli.cmd_follow)


@pytest.mark.parametrize("value", ["distproc-job-algo-1", "a b/c?d=é&e", "SIGKILL", "1700000000.123", "~x_y.z%"])
def test_engine_api_paths_are_quoted_as_urllib_would(value: str) -> None:
    from urllib.parse import quote

    from distproc.agent.engine import _q

    assert _q(value) == quote(value, safe="")
