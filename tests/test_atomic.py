import os
import stat

import pytest

from sepkit._atomic import atomic_split_write, atomic_write, default_file_mode


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


def _parts_writer(n_parts):
    """A writer that splits its file as MNE does: x.fif, x-1.fif, ..., the first naming the next."""

    def write(tmp):
        for k in range(n_parts):
            name = tmp.name if k == 0 else f"{tmp.stem}-{k}{tmp.suffix}"
            after = f"; next {tmp.stem}-{k + 1}{tmp.suffix}" if k + 1 < n_parts else ""
            (tmp.parent / name).write_text(f"part {k} of {n_parts}{after}")

    return write


def _part(k):
    return f"x-{k}.fif"


def test_split_write_moves_every_part_under_its_own_name(tmp_path):
    path = tmp_path / "x.fif"
    with atomic_split_write(path, _part) as tmp:
        assert tmp.name == "x.fif" and tmp.parent != tmp_path
        _parts_writer(3)(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-1.fif", "x-2.fif", "x.fif"]
    assert (
        path.read_text().startswith("part 0 of 3")
        and (tmp_path / "x-2.fif").read_text() == "part 2 of 3"
    )
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode()
    # A shorter file over it: the parts it does not replace go.
    os.chmod(path, 0o640)
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(1)(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fif"]
    assert path.read_text() == "part 0 of 1" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_split_write_leaves_files_that_only_look_like_parts(tmp_path):
    # Audit: x-1.fif / x-2.fif of the user's own went when x.fif was first written.
    (tmp_path / "x-1.fif").write_text("mine")
    (tmp_path / "x-2.fif").write_text("mine too")
    path = tmp_path / "x.fif"
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(1)(tmp)
    assert (tmp_path / "x-1.fif").read_text() == "mine"
    # Replacing an unsplit x.fif: still not its parts.
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(1)(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-1.fif", "x-2.fif", "x.fif"]
    # A split x.fif (3 parts, over them) replaced by 2 parts: only its own third part goes.
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(3)(tmp)
    (tmp_path / "x-3.fif").write_text("after the chain")
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(2)(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-1.fif", "x-3.fif", "x.fif"]


def test_failed_split_write_changes_nothing(tmp_path):
    path = tmp_path / "x.fif"
    with atomic_split_write(path, _part) as tmp:
        _parts_writer(2)(tmp)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_split_write(path, _part) as tmp:
            _parts_writer(3)(tmp)
            raise RuntimeError("disk full")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    with pytest.raises(FileNotFoundError, match="Create it first"):
        with atomic_split_write(tmp_path / "no" / "x.fif", _part):
            pass
