"""Write tests/kube_sim/protobuf_types.json, the protobuf field table of the simulator.

kubectl sends built-in kinds to the API server as protobuf (application/vnd.kubernetes.protobuf).
The simulator decodes those bodies with a table of each message's fields (number, JSON name,
type), made here from the Go types of Kubernetes: their struct tags carry the protobuf field
number, the JSON name and, through the Go type, whether a zero value was set on purpose.

Usage (from checkouts of github.com/kubernetes/api and github.com/kubernetes/apimachinery at the
tag of the simulated Kubernetes release):

    python3 scripts/gen_kube_sim_protobuf.py API_DIR APIMACHINERY_DIR TAG > tests/kube_sim/protobuf_types.json

TAG (e.g. v0.32.5) is read with ``git show TAG:path`` in both checkouts.
Only the messages reachable from the kinds the simulator serves are written.
"""

import json
import re
import subprocess
import sys

# package id -> (repository index, directory, files)
PACKAGES = {
    "core.v1": (0, "core/v1", ["types.go"]),
    "apps.v1": (0, "apps/v1", ["types.go"]),
    "policy.v1": (0, "policy/v1", ["types.go"]),
    "networking.v1": (0, "networking/v1", ["types.go"]),
    "coordination.v1": (0, "coordination/v1", ["types.go"]),
    "node.v1": (0, "node/v1", ["types.go"]),
    "autoscaling.v1": (0, "autoscaling/v1", ["types.go"]),
    "rbac.v1": (0, "rbac/v1", ["types.go"]),
    "authentication.v1": (0, "authentication/v1", ["types.go"]),
    "meta.v1": (1, "pkg/apis/meta/v1", ["types.go"]),
}
IMPORT_PATHS = {
    "k8s.io/api/core/v1": "core.v1",
    "k8s.io/api/apps/v1": "apps.v1",
    "k8s.io/api/policy/v1": "policy.v1",
    "k8s.io/api/networking/v1": "networking.v1",
    "k8s.io/api/coordination/v1": "coordination.v1",
    "k8s.io/api/node/v1": "node.v1",
    "k8s.io/api/autoscaling/v1": "autoscaling.v1",
    "k8s.io/api/rbac/v1": "rbac.v1",
    "k8s.io/api/authentication/v1": "authentication.v1",
    "k8s.io/apimachinery/pkg/apis/meta/v1": "meta.v1",
    "k8s.io/apimachinery/pkg/api/resource": "resource",
    "k8s.io/apimachinery/pkg/util/intstr": "intstr",
    "k8s.io/apimachinery/pkg/runtime": "runtime",
    "k8s.io/apimachinery/pkg/types": "types",
}
# Types with their own JSON form (their protobuf message is fixed, see tests/kube_sim/protobuf.py).
SPECIAL = {
    "meta.v1.Time": "time", "meta.v1.MicroTime": "microtime", "meta.v1.Duration": "duration",
    "meta.v1.FieldsV1": "raw", "runtime.RawExtension": "raw", "resource.Quantity": "quantity",
    "intstr.IntOrString": "intorstring", "types.UID": "string", "meta.v1.TypeMeta": None,
}
# apiVersion/kind -> message: the kinds the simulator serves, and the bodies clients send.
KINDS = {
    "v1/Namespace": "core.v1.Namespace", "v1/Node": "core.v1.Node", "v1/Pod": "core.v1.Pod",
    "v1/Service": "core.v1.Service", "v1/Endpoints": "core.v1.Endpoints",
    "v1/ConfigMap": "core.v1.ConfigMap", "v1/Secret": "core.v1.Secret",
    "v1/ServiceAccount": "core.v1.ServiceAccount", "v1/Event": "core.v1.Event",
    "v1/PersistentVolumeClaim": "core.v1.PersistentVolumeClaim",
    "v1/PersistentVolume": "core.v1.PersistentVolume", "v1/Binding": "core.v1.Binding",
    "apps/v1/Deployment": "apps.v1.Deployment", "apps/v1/ReplicaSet": "apps.v1.ReplicaSet",
    "apps/v1/StatefulSet": "apps.v1.StatefulSet", "apps/v1/DaemonSet": "apps.v1.DaemonSet",
    "policy/v1/PodDisruptionBudget": "policy.v1.PodDisruptionBudget", "policy/v1/Eviction": "policy.v1.Eviction",
    "coordination.k8s.io/v1/Lease": "coordination.v1.Lease", "node.k8s.io/v1/RuntimeClass": "node.v1.RuntimeClass",
    "networking.k8s.io/v1/Ingress": "networking.v1.Ingress",
    "networking.k8s.io/v1/IngressClass": "networking.v1.IngressClass",
    "autoscaling/v1/Scale": "autoscaling.v1.Scale",
    "rbac.authorization.k8s.io/v1/Role": "rbac.v1.Role",
    "rbac.authorization.k8s.io/v1/RoleBinding": "rbac.v1.RoleBinding",
    "rbac.authorization.k8s.io/v1/ClusterRole": "rbac.v1.ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding": "rbac.v1.ClusterRoleBinding",
    "authentication.k8s.io/v1/TokenRequest": "authentication.v1.TokenRequest",
    # every group version knows DeleteOptions (the body of a DELETE)
    "*/DeleteOptions": "meta.v1.DeleteOptions",
}
BUILTIN = {"string": "string", "bool": "bool", "int32": "int", "int64": "int", "int": "int", "uint32": "int",
           "uint64": "int", "float64": "double", "float32": "float", "[]byte": "bytes", "byte": "int"}

FIELD = re.compile(r'^\s*(\w+)?\s*([\w.\[\]*]+(?:\[[\w.]+\][\w.*\[\]]+)?)\s+`([^`]*)`')
EMBED = re.compile(r'^\s*(\*?[\w.]+)\s+`([^`]*)`')


def git_show(repo, tag, path):
    return subprocess.run(["git", "-C", repo, "show", "%s:%s" % (tag, path)], check=True,
                          capture_output=True, text=True).stdout


def tag_value(tags, key):
    match = re.search(r'%s:"([^"]*)"' % key, tags)
    return match.group(1) if match else None


def parse_package(text, pkg):
    """-> (structs {name: [(go_name, go_type, tags)]}, aliases {name: underlying go type}, imports)."""
    imports = {}
    for alias, path in re.findall(r'^\s*(\w+)?\s*"([^"]+)"\s*$', text.split("\n)", 1)[0], re.M):
        imports[alias or path.rsplit("/", 1)[-1]] = IMPORT_PATHS.get(path, path)
    structs, aliases = {}, {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r'^type (\w+) struct \{', line)
        if match:
            fields = []
            i += 1
            while not lines[i].startswith("}"):
                stripped = lines[i].strip()
                if stripped and not stripped.startswith("//") and "`" in stripped:
                    m = re.match(r'^(\w+)\s+(\S+)\s+`([^`]*)`', stripped)
                    if m:
                        fields.append((m.group(1), m.group(2), m.group(3)))
                    else:
                        m = EMBED.match(stripped)
                        if m:
                            fields.append((None, m.group(1), m.group(2)))
                i += 1
            structs[match.group(1)] = fields
        else:
            match = re.match(r'^type (\w+) (\S+)\s*(//.*)?$', line)
            if match and match.group(2) not in ("struct", "interface"):
                aliases[match.group(1)] = match.group(2)
        i += 1
    return structs, aliases, imports


class Builder(object):
    def __init__(self, repos, tag):
        self.pkgs = {}
        for pkg, (index, directory, files) in PACKAGES.items():
            text = "\n".join(git_show(repos[index], tag, "%s/%s" % (directory, f)) for f in files)
            self.pkgs[pkg] = parse_package(text, pkg)
        self.messages = {}

    def resolve(self, pkg, go_type):
        """A Go type -> (kind, repeated, pointer) with kind a table type or "m:<message>"."""
        repeated = pointer = False
        if go_type.startswith("*"):
            pointer, go_type = True, go_type[1:]
        if go_type == "[]byte":
            return "bytes", False, pointer
        if go_type.startswith("[]"):
            kind = self.resolve(pkg, go_type[2:])[0]
            return kind, True, pointer
        if go_type.startswith("map["):
            value = go_type[go_type.index("]") + 1:]
            kind, rep = self.resolve(pkg, value)[:2]
            if rep:
                kind = "list:" + kind
            return "map:" + kind, False, pointer
        if go_type in BUILTIN:
            return BUILTIN[go_type], False, pointer
        if "." in go_type:
            alias, name = go_type.split(".", 1)
            target = self.pkgs[pkg][2].get(alias, alias)
        else:
            target, name = pkg, go_type
        qualified = "%s.%s" % (target, name)
        if qualified in SPECIAL:
            return SPECIAL[qualified], False, pointer
        if target not in self.pkgs:
            raise SystemExit("unknown type %s (in %s)" % (qualified, pkg))
        structs, aliases = self.pkgs[target][:2]
        if name in structs:
            self.message(target, name)
            return "m:" + qualified, False, pointer
        if name in aliases:
            kind, rep, ptr = self.resolve(target, aliases[name])
            return kind, rep, pointer or ptr
        raise SystemExit("cannot resolve %s" % qualified)

    def message(self, pkg, name):
        qualified = "%s.%s" % (pkg, name)
        if qualified in self.messages:
            return
        self.messages[qualified] = None
        fields = []
        for go_name, go_type, tags in self.pkgs[pkg][0][name]:
            proto = tag_value(tags, "protobuf")
            if not proto:
                continue
            parts = proto.split(",")
            number = int(parts[1])
            json_tag = tag_value(tags, "json")
            json_name = (json_tag or "").split(",")[0]
            inline = go_name is None and json_name == "" or ",inline" in (json_tag or "")
            if json_name == "-":
                json_name = go_name
            kind, repeated, pointer = self.resolve(pkg, go_type)
            if kind is None:
                continue
            flags = ("r" if repeated else "") + ("p" if pointer else "") + ("i" if inline else "")
            fields.append([number, json_name, kind, flags])
        self.messages[qualified] = sorted(fields)


def main(argv):
    if len(argv) != 4:
        raise SystemExit(__doc__)
    builder = Builder(argv[1:3], argv[3])
    for message in KINDS.values():
        pkg, name = message.rsplit(".", 1)
        builder.message(pkg, name)
    out = sys.stdout
    out.write('{"source": %s,\n "kinds": %s,\n "messages": {\n' % (
        json.dumps("k8s.io/api and k8s.io/apimachinery %s (scripts/gen_kube_sim_protobuf.py)" % argv[3]),
        json.dumps(KINDS, sort_keys=True)))
    names = sorted(builder.messages)
    for index, name in enumerate(names):
        out.write("  %s: %s%s\n" % (json.dumps(name), json.dumps(builder.messages[name], separators=(",", ":")),
                                    "," if index < len(names) - 1 else ""))
    out.write(" }\n}\n")


if __name__ == "__main__":
    main(sys.argv)
