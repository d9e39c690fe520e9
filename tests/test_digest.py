"""legacy_eager.data.digest: the data's content as one SHA-256, so that a sweep's processes
agree on their data wherever it is mounted, and disagree when an image differs."""
import hashlib
import os
import shutil

from legacy_eager.data.digest import DOWNLOAD, content_digest
from tests import synthetic


def _tree(root, seed=1):
    (xt, yt), (xs, ys) = synthetic.make_arrays(20, seed), synthetic.make_arrays(10, seed + 1)
    return synthetic.write_image_tree(str(root), xt, yt, xs, ys)


def test_an_archive_is_its_sha256_wherever_it_lies(tmp_path):
    tree = _tree(tmp_path / "cifar")
    archive = synthetic.tar_folder(tree, str(tmp_path / "cifar.tar.gz"), "cifar")
    moved = shutil.copy(archive, tmp_path / "elsewhere.tar.gz")
    expected = "sha256:" + hashlib.sha256(open(archive, "rb").read()).hexdigest()  # sha256sum's
    assert content_digest(archive) == content_digest(str(moved)) == expected
    with open(moved, "ab") as f:
        f.write(b"\0")
    assert content_digest(str(moved)) != expected


def test_a_folder_is_its_files_paths_sizes_and_bytes(tmp_path):
    tree = _tree(tmp_path / "a")
    copy = shutil.copytree(tree, tmp_path / "b")  # another mount point, the same images
    digest = content_digest(tree)
    assert digest.startswith("sha256:") and content_digest(str(copy)) == digest
    # The last cat image relabelled a deer, first among them: the same bytes in the same
    # order, another label.
    cat, deer = copy / "train" / "cat", copy / "train" / "deer"
    last = sorted(os.listdir(cat))[-1]
    os.rename(cat / last, deer / ("0000" + last))
    assert sorted(os.listdir(deer))[0] == "0000" + last
    assert content_digest(str(copy)) != digest
    os.rename(deer / ("0000" + last), cat / last)
    assert content_digest(str(copy)) == digest
    other = _tree(tmp_path / "c", seed=5)  # same layout and names, other pixels
    assert content_digest(other) != digest


def test_the_download_is_one_and_the_same_source():
    assert content_digest(None) == DOWNLOAD
