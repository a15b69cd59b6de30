import os
import stat

import pytest

from sepkit._atomic import atomic_write


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").read_text() == "{}"
    assert _mode(tmp_path / "a.json") == 0o644  # not mkstemp's 0600
    assert list(tmp_path.iterdir()) == [tmp_path / "a.json"]  # no temp file left


def test_replacing_keeps_the_mode_of_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _mode(target) == 0o640


def test_failed_write_leaves_the_target_and_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with atomic_write(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"The folder '.*nodir' of .* does not exist"):
        with atomic_write(tmp_path / "nodir" / "a.txt"):
            pass
    assert not (tmp_path / "nodir").exists()
