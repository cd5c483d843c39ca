# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: source_zip
author: homelab.gpu maintainers (@homelab-gpu)
version_added: 0.1.0
short_description: Zip the collection's Python sources deterministically, for a ConfigMap's binaryData
description:
  - Packs every C(*.py) file found at run time directly in the given folders of a collection checkout
    (or installed collection) into one zip archive and returns it base64-encoded, the form a
    ConfigMap's C(binaryData) takes. Nothing is a hand-kept list; subfolders and C(__pycache__) are
    not included.
  - Inside the archive a file keeps its path below O(prefix), for example
    C(ansible_collections/homelab/gpu/gateway/app.py), so Python's C(zipimport) imports
    C(ansible_collections.homelab.gpu.gateway) from the archive with C(PYTHONPATH=<archive>).
  - The archive is deterministic, with entries sorted by path, the fixed timestamp 1980-01-01 00:00,
    mode 0644, deflate at level 9. The same files give the same bytes on every run (with the same
    zlib), so applying the result twice changes nothing; a changed file changes the bytes.
  - Fails with one sentence when a folder holds no C(*.py) file.
positional: _input, folders
options:
  _input:
    description: The collection's root folder (the one holding C(galaxy.yml) or C(MANIFEST.json)).
    type: path
    required: true
  folders:
    description: Folders below O(_input) whose C(*.py) files are packed.
    type: list
    elements: str
    required: true
  prefix:
    description: The path the folders get inside the archive.
    type: str
    default: ansible_collections/homelab/gpu
"""

EXAMPLES = r"""
- name: Ship the gateway's code as one binaryData key
  ansible.builtin.set_fact:
    code_zip: "{{ collection_root | homelab.gpu.source_zip(['gateway', 'plugins/module_utils']) }}"
"""

RETURN = r"""
_value:
  description: The zip archive, base64-encoded (no line breaks).
  type: str
"""

import base64
import glob
import io
import os
import zipfile

from ansible.errors import AnsibleFilterError

# 1980-01-01 00:00:00 is the earliest time a zip entry can carry: no file's mtime leaks in.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
DIR_MODE = 0o040755  # a directory, rwxr-xr-x


def source_files(root, folders, prefix="ansible_collections/homelab/gpu"):
    """Sorted (archive path, file path) pairs: every ``*.py`` directly in each folder of ``root``."""
    found = []
    for folder in folders:
        paths = sorted(glob.glob(os.path.join(root, folder, "*.py")))
        if not paths:
            raise AnsibleFilterError("source_zip found no *.py file in %s: give the collection's root folder "
                                     "(the one holding gateway/ and plugins/)" % os.path.join(root, folder))
        found += [("%s/%s/%s" % (prefix.strip("/"), folder.strip("/"), os.path.basename(p)), p) for p in paths]
    return sorted(found)


def folder_entries(names):
    """Every folder above the archive paths ``names``, sorted, each ending in '/'.

    zipimport (Python 3.11, 3.12) finds the namespace packages ansible_collections, homelab, gpu and
    plugins only when the archive lists their folders.
    """
    folders = set()
    for name in names:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[:end]) + "/" for end in range(1, len(parts) + 1))
    return sorted(folders)


def zip_bytes(files):
    """A deterministic zip of ``files`` ((archive path, file path) pairs, in the order given), its folders first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in folder_entries([n for n, _path in files]):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.create_system = 3
            info.external_attr = (DIR_MODE << 16) | 0x10  # 0x10: the MS-DOS directory flag
            archive.writestr(info, b"")
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that the mode below means what it says on every controller
            info.external_attr = FILE_MODE << 16
            with open(path, "rb") as handle:
                archive.writestr(info, handle.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buffer.getvalue()


def source_zip(root, folders, prefix="ansible_collections/homelab/gpu"):
    """The ``*.py`` files of ``folders`` below ``root`` as a deterministic zip, base64-encoded."""
    if isinstance(folders, str):
        folders = [folders]
    return base64.b64encode(zip_bytes(source_files(str(root), [str(f) for f in folders], str(prefix)))).decode("ascii")


class FilterModule(object):
    def filters(self):
        return {"source_zip": source_zip}
