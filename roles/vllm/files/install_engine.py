# Run by roles/vllm/tasks/boot_default.yml on a GPU worker, as
# `python3 -c <this file> DIRECTORY check|write` with a JSON object on stdin:
# file name -> text. Makes DIRECTORY (created 0755 with its parents) hold
# exactly those files (mode 0644):
# prints the name of each file it writes, changes or removes (one per line, so
# no output means nothing to do), and with "check" only prints them. One module
# run for the switch engine's files instead of one copy per file.
import json
import os
import sys


def main():
    directory, how = sys.argv[1], sys.argv[2]
    files = json.load(sys.stdin)
    if how == "write":
        os.makedirs(directory, mode=0o755, exist_ok=True)
    for name in sorted(files):
        path = os.path.join(directory, name)
        data = files[name].encode("utf-8")
        try:
            with open(path, "rb") as handle:
                same = handle.read() == data and (os.stat(path).st_mode & 0o7777) == 0o644
        except OSError:
            same = False
        if same:
            continue
        print(name)
        if how == "write":
            temporary = path + ".new"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
    for name in sorted(os.listdir(directory) if os.path.isdir(directory) else []):
        if name not in files and os.path.isfile(os.path.join(directory, name)):
            print(name)
            if how == "write":
                os.remove(os.path.join(directory, name))


main()
