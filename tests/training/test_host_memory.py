"""The log line about huge-page malloc reads the environment and the kernel's mode."""

import pytest

from disentangle_jax.training import host_memory


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.thp_mode(str(path)) == "madvise"
  assert host_memory.thp_mode(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
  "tunables, on",
  [
    ("glibc.malloc.hugetlb=1", True),
    ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", True),
    ("glibc.malloc.hugetlb=0", False),
    ("glibc.malloc.hugetlb=1:glibc.malloc.hugetlb=0", False),  # the last setting wins
    ("", False),
  ],
)
def test_describe_says_whether_the_tunable_is_on(tunables, on):
  line = host_memory.describe({"GLIBC_TUNABLES": tunables})
  assert line.startswith("malloc with huge pages") == on
