"""Huge-page malloc: when the environment changes, and that the restart happens exactly once."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

from disentangle_jax.training import host_memory

GLIBC = ("glibc", "2.36")


def test_adds_the_tunable_on_glibc_with_madvise_mode():
  env = host_memory.huge_page_environ({"PATH": "/bin"}, GLIBC, "madvise")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_keeps_the_users_other_tunables():
  env = host_memory.huge_page_environ(
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "madvise"
  )
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
  "environ, libc, mode",
  [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise"),  # the user's choice
    ({"GLIBC_TUNABLES": "a.b=1:glibc.malloc.hugetlb=1"}, GLIBC, "madvise"),  # restarted already
    ({"DISENTANGLE_JAX_HUGE_PAGES": "0"}, GLIBC, "madvise"),  # opted out
    ({}, ("glibc", "2.34"), "madvise"),  # no such tunable before 2.35
    ({}, ("musl", "1.2"), "madvise"),
    ({}, ("", ""), "madvise"),  # not Linux
    ({}, GLIBC, "always"),  # malloc's memory gets huge pages anyway
    ({}, GLIBC, "never"),
    ({}, GLIBC, None),  # no /sys file
  ],
)
def test_changes_nothing_where_it_should_not(environ, libc, mode):
  assert host_memory.huge_page_environ(environ, libc, mode) is None


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.thp_mode(str(path)) == "madvise"
  assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_the_process_restarts_once_with_the_tunable(tmp_path):
  """A script that calls `reexec_with_huge_pages` (with the host checks patched to say yes) runs
  twice: first with the environment it was given, then with the tunable, and then goes on."""
  log = tmp_path / "starts.txt"
  script = textwrap.dedent(
    f"""
    import os
    from disentangle_jax.training import host_memory
    with open({str(log)!r}, "a") as f:
      f.write(repr(os.environ.get("GLIBC_TUNABLES")) + "\\n")
    host_memory.thp_mode = lambda: "madvise"
    host_memory.platform.libc_ver = lambda: ("glibc", "2.36")
    host_memory.reexec_with_huge_pages()
    print("went on:", host_memory.describe())
    """
  )
  # An environment without GLIBC_TUNABLES, whatever the test runner's has.
  env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
  out = subprocess.run(
    [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
  ).stdout
  assert log.read_text().splitlines() == ["None", "'glibc.malloc.hugetlb=1'"]
  want = "malloc with transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"
  assert out.strip() == f"went on: {want}"
