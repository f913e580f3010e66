"""Hostile /opt/ml/output/message files, on the namespace cluster.

SageMaker's contract (docs/contract.md): each container may write UTF-8 text
to /opt/ml/output/message; the messages are concatenated in algo order and cut
to 1024 characters; a message that is not UTF-8 fails the job with ClientError.
Here: a 50 MiB message (cut, the outcome right, the coordinator no bigger for
it), cuts that land on multi-byte characters, NUL bytes, binary junk, files
cut in the middle of a character, and message "files" that are a FIFO or a
symlink to a host file.

(A plain non-UTF-8 message and a job name already in use are in test_e2e.py.)
"""

from __future__ import annotations

import json
import os
import random
import sys
import tracemalloc
from pathlib import Path

import pytest

from bench.load import run_timed
from distproc.agent.files import MESSAGE_CHARS, read_message
from tests.cluster.jobs import Env, job_doc

MESSAGE = "/opt/ml/output/message"
MIB = 1024 * 1024
# 50 MiB: a numbered line per 32 bytes, so where the cut falls can be read back.
HUGE_LINE = "{:031d}\n"
HUGE_LINES = 50 * MIB // 32
HUGE_HEAD = "".join(HUGE_LINE.format(i) for i in range(40))[:MESSAGE_CHARS]


def _write_message(data: bytes) -> str:
    """Code that writes these exact bytes to the message file."""
    return f"open({MESSAGE!r}, 'wb').write(bytes.fromhex({data.hex()!r}))\n"


def _timed_run(e: Env, doc: dict[str, object]) -> tuple[int, str, dict[str, float]]:
    """`distproc run` of doc: exit code, stderr, and its wall time and peak RSS (killed after 240 s)."""
    argv = [sys.executable, "-m", "distproc", "run", "--quiet", "-i", str(e.inventory)]
    done, usage = run_timed([*argv, str(e.write_job(doc))], {**os.environ, "DISTPROC_HOME": str(e.home)}, 240)
    return done.returncode, done.stderr, usage


@pytest.mark.cluster
@pytest.mark.parametrize("exit_code", [0, 3], ids=["exit-0", "exit-3"])
def test_a_50_mib_message_is_cut_and_the_outcome_holds(env: Env, exit_code: int) -> None:
    """50 MiB written to the message file: ExitMessage is its first 1024 characters, the status follows the
    exit code, FailureReason stays within 1024, nothing hangs, and neither the host's record nor the
    coordinator grows with it."""
    entrypoint, code_input = env.script("msg-small", f"open({MESSAGE!r}, 'w').write('ok')\n")
    rc, err, baseline = _timed_run(env, job_doc("msg-small", count=1, entrypoint=entrypoint, inputs=[code_input]))
    assert rc == 0, err

    code = (
        f"with open({MESSAGE!r}, 'w') as f:\n"
        f"    for j in range(0, {HUGE_LINES}, 4096):\n"
        f"        f.write(''.join({HUGE_LINE!r}.format(i) for i in range(j, j + 4096)))\n"
        f"raise SystemExit({exit_code})\n"
    )
    name = f"msg-huge-{exit_code}"
    entrypoint, code_input = env.script(name, code)
    rc, err, usage = _timed_run(env, job_doc(name, count=1, entrypoint=entrypoint, inputs=[code_input]))
    assert rc == (0 if exit_code == 0 else 1), err
    assert "Traceback" not in err

    described = env.describe(name)
    host = described["Distproc"]["Hosts"][0]
    assert described["ExitMessage"] == HUGE_HEAD
    assert host["ExitMessage"] == HUGE_HEAD
    assert host["ExitCode"] == exit_code
    if exit_code == 0:
        assert described["ProcessingJobStatus"] == "Completed"
        assert "FailureReason" not in described  # unset members are left out, as AWS does
    else:
        assert described["ProcessingJobStatus"] == "Failed"
        reason = described["FailureReason"]
        assert len(reason) <= 1024
        assert reason.startswith("AlgorithmError: algo-1 (h1) exited with code 3: " + HUGE_HEAD[:200])
        # Cut at a word (here line) boundary: the last number shown is whole.
        assert reason.endswith("...") and len(reason[:-3].rsplit("\n", 1)[-1]) == 31
    # The agent's own record holds the cut message, not the file; the file went with the job folder.
    job_dir = env.cluster.hosts[0].work_dir / "jobs" / name / "algo-1"
    assert (job_dir / "result.json").stat().st_size < 16 * 1024
    assert json.loads((job_dir / "result.json").read_text())["message"] == HUGE_HEAD
    assert not (job_dir / "ml").exists()
    # Reading the whole message into the coordinator would add 50 MiB (more as str); it adds nothing.
    assert usage["maxrss_mib"] < baseline["maxrss_mib"] + 20, (baseline, usage)


def test_the_agent_reads_a_huge_message_in_bounded_memory(tmp_path: Path) -> None:
    """The agent's read of a 50 MiB message allocates well under a MiB of it at any time."""
    path = tmp_path / "message"
    with open(path, "w") as fh:
        for j in range(0, HUGE_LINES, 4096):
            fh.write("".join(HUGE_LINE.format(i) for i in range(j, j + 4096)))
    tracemalloc.start()
    try:
        message, problem = read_message(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (message, problem) == (HUGE_HEAD, None)
    assert peak < 2 * MIB, peak


@pytest.mark.cluster
def test_cuts_on_multibyte_characters_and_nul_bytes_keep_valid_text(env: Env) -> None:
    """Valid UTF-8 is cut by characters, never inside one, per host and across hosts; NUL is kept as U+0000."""
    messages = {
        # 1023 characters, the last one two bytes long: the job's 1024th character comes from algo-2.
        "algo-1": "a" * 1022 + "é",
        # 1100 four-byte characters: the host's own message is cut at 1024 of them (4096 bytes).
        "algo-2": "\U0001f680" * 1100,
        # NUL bytes, and a three-byte character across the agent's 64 KiB read boundary (bytes 65535-65537).
        "algo-3": "\x00nul\x00" + "a" * 65530 + "日" + "tail",
    }
    assert len(messages["algo-3"][:65535].encode()) == 65535
    code = (
        "import json\n"
        "me = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']\n"
        f"open({MESSAGE!r}, 'w', encoding='utf-8').write({messages!r}[me])\n"
    )
    entrypoint, code_input = env.script("msg-utf8", code)
    result = env.run_job(job_doc("msg-utf8", count=3, entrypoint=entrypoint, inputs=[code_input]), "--quiet")
    assert result.returncode == 0, result.stderr
    described = env.describe("msg-utf8")
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == "a" * 1022 + "é" + "\U0001f680"
    per_host = {h["Host"]: (h["Status"], h["ExitMessage"]) for h in described["Distproc"]["Hosts"]}
    assert per_host == {
        "algo-1": ("Completed", messages["algo-1"]),
        "algo-2": ("Completed", "\U0001f680" * 1024),
        "algo-3": ("Completed", messages["algo-3"][:1024]),
    }
    text = env.cli("describe", "msg-utf8")
    assert text.returncode == 0 and "Traceback" not in text.stderr
    assert "Status:         Completed" in text.stdout


def _binary() -> bytes:
    """Every byte value (NUL first) in a fixed shuffled order, four times: not UTF-8."""
    data = bytearray(range(256)) * 4
    random.Random(6).shuffle(data)
    return b"\x00" + bytes(data)


NOT_UTF8 = "is not valid UTF-8"
# Each case: the script that writes the message, and what FailureReason says about it.
INVALID = {
    "binary-with-nul": (_write_message(_binary()), NOT_UTF8),
    # A valid start whose file ends in the middle of the 1024th character.
    "cut-inside-the-1024th-character": (_write_message(b"a" * 1023 + "日".encode()[:2]), NOT_UTF8),
    # Past what is kept (1024 characters) and past the agent's first 64 KiB read: still checked.
    "bad-byte-after-100-kb": (_write_message(b"a" * 100000 + b"\xff" + b"tail"), NOT_UTF8),
    # A UTF-16 surrogate encoded as UTF-8 (CESU-8 style): not valid UTF-8.
    "encoded-surrogate": (_write_message(b"ok \xed\xa0\x80"), NOT_UTF8),
    # Not a regular file: opening a FIFO to read would block forever.
    "fifo": (f"import os\nos.mkfifo({MESSAGE!r})\n", "is a named pipe, not a regular file"),
    # A symlink resolves on the host: following it would put a host file into ExitMessage.
    "symlink-to-a-host-file": (
        f"import os\nos.symlink('/etc/passwd', {MESSAGE!r})\n",
        "is a symbolic link (not followed), not a regular file",
    ),
}


@pytest.mark.cluster
@pytest.mark.parametrize("case", list(INVALID))
def test_a_message_that_is_not_utf8_text_fails_with_client_error(env: Env, case: str) -> None:
    """Binary junk, a cut character, a bad byte far in, a FIFO or a symlink: ClientError, no traceback, no hang."""
    name = f"badmsg-{case}"
    script, problem = INVALID[case]
    entrypoint, code_input = env.script(name, script)
    rc, err, _ = _timed_run(env, job_doc(name, count=1, entrypoint=entrypoint, inputs=[code_input]))
    assert rc == 1, err
    assert "Traceback" not in err
    reason = f"ClientError: algo-1 (h1) wrote /opt/ml/output/message that {problem}"
    assert reason in err
    described = env.describe(name)
    assert described["ProcessingJobStatus"] == "Failed"
    assert described["FailureReason"] == reason
    assert "ExitMessage" not in described  # unset members are left out, as AWS does
    host = described["Distproc"]["Hosts"][0]
    assert (host["Status"], host["ExitCode"], host["ExitMessage"]) == ("Failed", 0, None)
    text = env.cli("describe", name)
    assert text.returncode == 0 and "Traceback" not in text.stderr and "root:" not in text.stdout
