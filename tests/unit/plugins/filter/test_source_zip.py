# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter that packs the gateway's code for ConfigMap vllm-gateway-code: deterministic bytes,
the collection's layout inside, importable with zipimport, one sentence for a wrong root."""
import base64
import io
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.gpu.plugins.filter.source_zip import source_zip

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
FOLDERS = ["gateway", "plugins/module_utils"]


def copy_sources(target):
    """A copy of the two folders' *.py files (new inodes, new mtimes) under ``target``."""
    for folder in FOLDERS:
        os.makedirs(str(target / folder))
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                shutil.copy(os.path.join(ROOT, folder, name), str(target / folder / name))
    return str(target)


def archive(encoded):
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded)))


def test_the_same_files_give_the_same_bytes_whatever_their_times_and_modes(tmp_path):
    first = source_zip(ROOT, FOLDERS)
    copy = copy_sources(tmp_path / "copy")
    for folder in FOLDERS:
        for name in os.listdir(os.path.join(copy, folder)):
            os.utime(os.path.join(copy, folder, name), (1e9, 1e9))
            os.chmod(os.path.join(copy, folder, name), 0o600)
    assert source_zip(copy, FOLDERS) == first
    assert source_zip(ROOT, FOLDERS) == first


def test_a_changed_file_gives_different_bytes(tmp_path):
    copy = copy_sources(tmp_path / "copy")
    before = source_zip(copy, FOLDERS)
    with open(os.path.join(copy, "gateway", "app.py"), "a") as handle:
        handle.write("# one more line\n")
    after = source_zip(copy, FOLDERS)
    assert after != before
    assert archive(after).read("ansible_collections/homelab/gpu/gateway/app.py").endswith(b"# one more line\n")


def test_every_py_file_is_in_the_collection_layout_sorted_with_fixed_time_and_mode(tmp_path):
    copy = copy_sources(tmp_path / "copy")
    os.makedirs(os.path.join(copy, "gateway", "__pycache__"))
    with open(os.path.join(copy, "gateway", "__pycache__", "app.cpython-311.pyc"), "wb") as handle:
        handle.write(b"not source")
    with open(os.path.join(copy, "gateway", "notes.txt"), "w") as handle:
        handle.write("not source")
    with open(os.path.join(copy, "plugins", "module_utils", "new_stage.py"), "w") as handle:
        handle.write("STAGE = 'new'\n")
    infos = archive(source_zip(copy, FOLDERS)).infolist()
    names = [i.filename for i in infos]
    files = [i.filename for i in infos if not i.is_dir()]
    expected = sorted("ansible_collections/homelab/gpu/%s/%s" % (folder, name) for folder in FOLDERS
                      for name in os.listdir(os.path.join(copy, folder)) if name.endswith(".py"))
    assert files == expected and "ansible_collections/homelab/gpu/plugins/module_utils/new_stage.py" in files
    assert names[:6] == ["ansible_collections/", "ansible_collections/homelab/", "ansible_collections/homelab/gpu/",
                         "ansible_collections/homelab/gpu/gateway/", "ansible_collections/homelab/gpu/plugins/",
                         "ansible_collections/homelab/gpu/plugins/module_utils/"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {(i.external_attr >> 16) for i in infos if not i.is_dir()} == {0o100644}
    assert {i.compress_type for i in infos if not i.is_dir()} == {zipfile.ZIP_DEFLATED}


def test_python_imports_the_gateway_from_the_zip_alone(tmp_path):
    path = tmp_path / "code.zip"
    path.write_bytes(base64.b64decode(source_zip(ROOT, FOLDERS)))
    env = {"PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ.get("PATH", "")}
    code = ("import ansible_collections.homelab.gpu.gateway.app as app, "
            "ansible_collections.homelab.gpu.plugins.module_utils.plan as plan; print(app.__file__); print(plan.__file__)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(path / "ansible_collections/homelab/gpu/gateway/app.py"),
                                   str(path / "ansible_collections/homelab/gpu/plugins/module_utils/plan.py")]


def test_a_folder_without_python_files_is_one_sentence(tmp_path):
    with pytest.raises(AnsibleFilterError) as error:
        source_zip(str(tmp_path), FOLDERS)
    assert str(error.value) == ("source_zip found no *.py file in %s: give the collection's root folder "
                                "(the one holding gateway/ and plugins/)" % os.path.join(str(tmp_path), "gateway"))
