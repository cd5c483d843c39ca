"""Verify the gpu_worker role on the Molecule `default` test hosts (testinfra).

The expectations come from the scenario's inventory (group_vars/host_vars) and
the role's own defaults and vars, rendered the way Ansible renders them, so a
change of a default is tested without editing this file.
"""
import json
import os
import re
import shlex

import pytest
import yaml
from jinja2.nativetypes import NativeEnvironment

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(SCENARIO))
ROLE = os.path.join(ROOT, "roles", "gpu_worker")
HOSTS = ["gpu-worker-ubuntu2404", "gpu-worker-ubuntu2204", "gpu-worker-debian12"]
testinfra_hosts = ["podman://" + name for name in HOSTS]

FACTS = {
    "gpu-worker-ubuntu2404": {"distribution": "Ubuntu", "distribution_version": "24.04",
                              "distribution_major_version": "24", "architecture": "x86_64"},
    "gpu-worker-ubuntu2204": {"distribution": "Ubuntu", "distribution_version": "22.04",
                              "distribution_major_version": "22", "architecture": "x86_64"},
    "gpu-worker-debian12": {"distribution": "Debian", "distribution_version": "12",
                            "distribution_major_version": "12", "architecture": "x86_64"},
}


def _load(path):
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def _regex_escape(value):
    return re.escape(value)


def role_vars(hostname, **overrides):
    """The role's variables for one host, rendered with Jinja2 like Ansible does."""
    data = {}
    data.update(_load(os.path.join(ROLE, "defaults", "main.yml")))
    data.update(_load(os.path.join(ROLE, "vars", "main.yml")))
    data.update(_load(os.path.join(SCENARIO, "inventory", "group_vars", "gpu_workers.yml")))
    data.update(_load(os.path.join(SCENARIO, "inventory", "host_vars", hostname + ".yml")))
    data.update(overrides)
    data["ansible_facts"] = dict(FACTS[hostname], hostname=hostname)
    data["inventory_hostname"] = hostname
    env = NativeEnvironment()
    env.filters["regex_escape"] = _regex_escape
    env.filters["urlencode"] = lambda v: v.replace("+", "%2B")
    env.globals["lookup"] = lambda kind, name: os.environ.get(name, "") if kind.endswith("env") else None

    def render(value, depth=0):
        if isinstance(value, str) and "{{" in value and depth < 10:
            out = env.from_string(value).render(**data)
            return render(out, depth + 1)
        if isinstance(value, list):
            return [render(v, depth) for v in value]
        if isinstance(value, dict):
            return {k: render(v, depth) for k, v in value.items()}
        return value

    return {k: render(v) for k, v in data.items()}


@pytest.fixture
def hv(host):
    return role_vars(host.backend.hostname)


def dpkg_status(host, name):
    out = host.run("dpkg-query -W -f='${db:Status-Abbrev}|${Version}' %s", name)
    if out.rc != 0:
        return None, None
    status, version = out.stdout.split("|", 1)
    return status.strip(), version.strip()


def apt_sim(host, args):
    cmd = host.run("apt-get -s -q %s" % args)
    assert cmd.rc == 0, cmd.stderr
    return re.findall(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ", cmd.stdout, re.M)


# ---------------------------------------------------------------- driver


def test_driver_packages_installed_from_the_branch_and_held(host, hv):
    branch = hv["gpu_worker_driver_branch"]
    for name in hv["gpu_worker__driver_packages"]:
        status, version = dpkg_status(host, name)
        assert status == "hi", "%s should be installed and held, dpkg says %r" % (name, status)
        assert version.startswith(branch + "."), "%s is %s, not branch %s" % (name, version, branch)
        if hv["gpu_worker_driver_version"]:
            assert version.startswith(hv["gpu_worker_driver_version"])


def test_every_installed_driver_package_is_held(host, hv):
    out = host.check_output("dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\\n'")
    driver = [line.split("|") for line in out.splitlines()
              if re.match(r"^ii|^hi", line) and line.split("|")[2].startswith(hv["gpu_worker_driver_branch"] + ".")]
    assert len(driver) >= 2
    for status, name, version in driver:
        assert status.strip() == "hi", "%s %s is installed but not held" % (name, version)


def test_repository_carries_newer_branches(host, hv):
    # Without this the pin test below would prove nothing.
    name = hv["gpu_worker__driver_packages"][0]
    policy = host.check_output("apt-cache policy %s", name)
    assert re.search(r"^\s+(\*\*\* )?58\d\.", policy, re.M), policy


def test_pin_keeps_the_branch_even_without_the_hold(host, hv):
    branch = hv["gpu_worker_driver_branch"]
    # --ignore-hold: the apt preferences alone must stop the move to 575/580.
    moved = apt_sim(host, "--ignore-hold dist-upgrade")
    assert [m for m in moved if "nvidia" in m[0] or m[0] == "libcuda1"] == []
    names = " ".join(hv["gpu_worker__driver_packages"])
    if hv["ansible_facts"]["distribution"] == "Debian":
        names += " nvidia-driver"
    for name, version in apt_sim(host, "--ignore-hold install %s" % names):
        if name.startswith(("nvidia-", "libnvidia-", "libcuda")) and "container" not in name:
            assert version.startswith(hv["gpu_worker__driver_pin_version"].rstrip("*")), (name, version)


def test_upgrade_does_not_touch_the_driver(host):
    moved = apt_sim(host, "upgrade")
    assert [m for m in moved if "nvidia" in m[0] or m[0] == "libcuda1"] == []


def test_apt_preferences_pin_branch_and_block_the_archive(host, hv):
    pref = host.file("/etc/apt/preferences.d/homelab-gpu-nvidia-driver.pref")
    assert pref.mode == 0o644 and pref.user == "root"
    text = pref.content_string
    assert "Pin: version %s\nPin-Priority: 1001" % hv["gpu_worker__driver_pin_version"] in text
    assert "Pin: release o=%s\nPin-Priority: -1" % hv["ansible_facts"]["distribution"] in text


def test_repositories_use_signed_by_keyrings(host, hv):
    for name, key in (("nvidia-cuda", "nvidia-cuda.asc"), ("nvidia-container-toolkit", "nvidia-container-toolkit.asc")):
        src = host.file("/etc/apt/sources.list.d/%s.sources" % name)
        assert src.exists and src.mode == 0o644
        assert "Signed-By: /etc/apt/keyrings/%s" % key in src.content_string
        assert host.file("/etc/apt/keyrings/" + key).content_string.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    # apt-key was not used: no key in the global trusted keyrings.
    assert not host.file("/etc/apt/trusted.gpg").exists
    listing = host.check_output("ls /etc/apt/trusted.gpg.d/ 2>/dev/null || true")
    assert "nvidia" not in listing


def test_nvidia_smi_reports_the_branch(host, hv):
    out = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    assert out.startswith(hv["gpu_worker_driver_branch"] + ".")


def test_nvidia_persistenced_enabled_and_running(host):
    svc = host.service("nvidia-persistenced")
    assert svc.is_enabled and svc.is_running


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/blacklist-nouveau-homelab-gpu.conf")
    assert conf.mode == 0o644
    assert "blacklist nouveau" in conf.content_string


def test_bolt_installed(host):
    assert host.package("bolt").is_installed


def test_boltctl_left_alone_in_a_container(host):
    # gpu_worker_manage_thunderbolt "auto": converge does not talk to boltd in a container, not even
    # on the host whose inventory names an eGPU UUID. The stand-in boltctl (prepare.yml) logs every
    # call; side_effect.yml's eGPU rounds, after verify, run the enrollment with the step forced on.
    assert host.file("/usr/local/bin/boltctl").exists
    assert not host.file("/var/lib/homelab-bolt-standin/calls.log").exists


# ------------------------------------------------------ container toolkit


def test_container_toolkit_pinned_version(host, hv):
    version = hv["gpu_worker_container_toolkit_version"]
    for name in hv["gpu_worker__toolkit_packages"]:
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == version
    pref = host.file("/etc/apt/preferences.d/homelab-gpu-nvidia-container-toolkit.pref").content_string
    assert "Pin: version %s\nPin-Priority: 1001" % version in pref
    # A newer toolkit is in the repository but not taken.
    assert "1.18.0-1" in host.check_output("apt-cache policy nvidia-container-toolkit")
    assert [m for m in apt_sim(host, "upgrade") if "container" in m[0]] == []


# --------------------------------------------------------------- k3s agent


def _role_manages_the_agent(hv):
    if not hv["gpu_worker_manage_k3s_agent"]:
        pytest.skip("another tool manages this host's agent (test_agent_of_another_tool_left_alone)")


def test_k3s_binary_is_the_verified_download(host, hv):
    _role_manages_the_agent(hv)
    with open(os.path.join(ROOT, "tests", "stubs", "k3s", "k3s.sha256")) as handle:
        expected = handle.read().split()[0]
    binary = host.file("/usr/local/bin/k3s")
    assert binary.sha256sum == expected
    assert binary.mode == 0o755 and binary.user == "root"


def test_k3s_agent_enabled_and_active(host):
    svc = host.service("k3s-agent")
    assert svc.is_enabled and svc.is_running
    unit = host.file("/etc/systemd/system/k3s-agent.service").content_string
    assert "ExecStart=/usr/local/bin/k3s agent" in unit and "Type=notify" in unit


def test_k3s_agent_started_once_and_never_restarted(host, hv):
    # converge started it once; the second converge (idempotence) restarted nothing.
    # The agent of another tool started in prepare.yml, and converge restarted it
    # once, for the runtimes and the drop-in it brought.
    log = host.check_output("journalctl -u k3s-agent --no-pager -o cat")
    assert log.count("running (stub") == (1 if hv["gpu_worker_manage_k3s_agent"] else 2), log
    assert host.check_output("systemctl show -p NRestarts --value k3s-agent") == "0"


def test_k3s_config(host, hv):
    _role_manages_the_agent(hv)
    conf_file = host.file("/etc/rancher/k3s/config.yaml")
    assert conf_file.mode == 0o600 and conf_file.user == "root"
    conf = yaml.safe_load(conf_file.content_string)
    assert conf["server"] == hv["gpu_worker_k3s_server_url"]
    assert conf["token-file"] == "/etc/rancher/k3s/agent-token"
    assert "token" not in conf
    assert conf["node-name"] == host.backend.hostname
    assert "nvidia.com/gpu.present=true" in conf["node-label"]
    assert "nvidia.com/gpu=true" in conf["node-label"]
    for name, value in hv["gpu_worker_k3s_node_labels"].items():
        assert "%s=%s" % (name, value) in conf["node-label"]
    assert conf["node-taint"] == ["gpu=true:NoSchedule"]
    if hv["gpu_worker_nvidia_default_runtime"]:
        assert conf["default-runtime"] == "nvidia"
    else:
        assert "default-runtime" not in conf
    assert not host.file("/etc/rancher/k3s/config.yaml.d/50-homelab-gpu.yaml").exists


def test_token_file_is_private(host, hv):
    _role_manages_the_agent(hv)
    token = host.file("/etc/rancher/k3s/agent-token")
    assert token.mode == 0o600 and token.user == "root" and token.group == "root"
    assert token.content_string.strip() == hv["gpu_worker_k3s_token"]


# prepare.yml installed these from files/other-tool/ and dated them 2020-01-01.
OTHER_TOOL_FILES = {"k3s": "/usr/local/bin/k3s", "k3s-agent.service": "/etc/systemd/system/k3s-agent.service",
                    "config.yaml": "/etc/rancher/k3s/config.yaml"}


def test_agent_of_another_tool_left_alone(host, hv):
    """With gpu_worker_manage_k3s_agent false the binary, unit and config.yaml
    another tool installed are untouched after converge and its re-run, the role
    wrote no token file, and its only k3s file is the default-runtime drop-in."""
    if hv["gpu_worker_manage_k3s_agent"]:
        pytest.skip("the role manages this host's agent (the k3s tests above)")
    import hashlib
    for name, path in OTHER_TOOL_FILES.items():
        with open(os.path.join(SCENARIO, "files", "other-tool", name), "rb") as handle:
            expected = hashlib.sha256(handle.read()).hexdigest()
        assert host.file(path).sha256sum == expected, "%s was rewritten" % path
        assert host.check_output("stat -c %%Y %s", path) == "1577836800", "%s was touched" % path
    assert not host.file("/etc/rancher/k3s/agent-token").exists
    dropin = host.file("/etc/rancher/k3s/config.yaml.d/50-homelab-gpu.yaml")
    assert yaml.safe_load(dropin.content_string) == {"default-runtime": "nvidia"}
    assert dropin.mode == 0o644


def test_k3s_found_the_nvidia_runtime(host, hv):
    # The (stub) agent registers containerd runtimes the way k3s does at start.
    conf = host.file("/var/lib/rancher/k3s/agent/etc/containerd/config.toml").content_string
    assert 'runtimes."nvidia"' in conf and "/usr/bin/nvidia-container-runtime" in conf
    if hv["gpu_worker_nvidia_default_runtime"]:
        assert 'default_runtime_name = "nvidia"' in conf


# ---------------------------------------------------- model cache, facts


def test_model_cache_directory(host, hv):
    cache = host.file(hv["gpu_worker_model_cache_path"])
    assert cache.is_directory
    assert cache.user == hv["gpu_worker_model_cache_owner"]
    assert cache.mode == int(hv["gpu_worker_model_cache_mode"], 8)


def test_gpu_local_fact(host, hv):
    fact_file = host.file("/etc/ansible/facts.d/gpu.fact")
    assert fact_file.mode == 0o644
    fact = json.loads(fact_file.content_string)
    smi = host.check_output("nvidia-smi --query-gpu=driver_version,name,memory.total --format=csv,noheader,nounits")
    driver, name, memory = [f.strip() for f in smi.split(",")]
    assert fact["driver_version"] == driver
    assert fact["gpu_name"] == name == "NVIDIA GeForce RTX 3060"
    assert fact["gpu_memory_mib"] == int(memory) == 12288
    assert fact["cuda_version"] == {"570": "12.8", "575": "12.9", "580": "13.0"}[driver.split(".")[0]]


# ------------------------------------------- the Node, through the API


def _cluster(hv):
    from kubernetes import client, config
    return client, config.new_client_from_config(config_file=hv["gpu_worker_kubeconfig"])


def test_node_carries_gpu_feature_discovery_labels(host, hv):
    # The cluster has no GPU Feature Discovery: these labels are the role's, from nvidia-smi,
    # and they are what vllm_mode's CUDA and VRAM checks read.
    client, api = _cluster(hv)
    labels = client.CoreV1Api(api).read_node(hv["gpu_worker_k3s_node_name"]).metadata.labels
    fact = json.loads(host.file("/etc/ansible/facts.d/gpu.fact").content_string)
    driver = fact["driver_version"]
    assert "nvidia.com/gfd.timestamp" not in labels
    assert labels["nvidia.com/cuda.driver-version.full"] == driver
    assert labels["nvidia.com/cuda.driver.major"] == driver.split(".")[0] == hv["gpu_worker_driver_branch"]
    assert labels["nvidia.com/cuda.driver.rev"] == driver.split(".")[2]
    assert labels["nvidia.com/cuda.runtime-version.full"] == fact["cuda_version"] == "12.8"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-3060"
    assert labels["nvidia.com/gpu.memory"] == "12288"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == ("8", "6")
    assert labels["nvidia.com/gpu.present"] == "true"


def test_node_carries_the_old_setups_gpu_label_and_the_users_labels(hv):
    # Workloads written for the old setup select the GPU worker with
    # nodeSelector nvidia.com/gpu: "true". Through the API, so also where
    # another tool manages the agent and config.yaml's node-label is not the role's.
    client, api = _cluster(hv)
    labels = client.CoreV1Api(api).read_node(hv["gpu_worker_k3s_node_name"]).metadata.labels
    assert labels["nvidia.com/gpu"] == "true"
    assert labels["nvidia.com/gpu.present"] == "true"
    for name, value in hv["gpu_worker_k3s_node_labels"].items():
        assert labels[name] == value


def test_nvidia_runtime_class_created(hv):
    # prepare.yml removed it, as on a k3s server older than v1.29.
    client, api = _cluster(hv)
    assert client.NodeV1Api(api).read_runtime_class("nvidia").handler == "nvidia"


# ------------------------------------- the role's package names, real archive


ARCHIVE_OPTS = ("-o Dir::Etc::SourceParts=/dev/null/none -o Dir::Etc::PreferencesParts=/dev/null/none "
                "-o Dir::Etc::Preferences=/tmp/archive-check/distro.pref -o Dir::State::Lists=/tmp/archive-check/lists")


_ARCHIVE_READY = set()


def _archive_setup(host, modules):
    """Render the role's pin for the `distro` source, point apt at the real
    Ubuntu archive only (not the stub NVIDIA repository) and update its lists
    (once per host)."""
    name = host.backend.hostname
    if FACTS[name]["distribution"] != "Ubuntu":
        pytest.skip("the distro source is Ubuntu-only (the role refuses it on Debian)")
    hv = role_vars(name, gpu_worker_driver_source="distro", gpu_worker_driver_kernel_modules=modules,
                   gpu_worker_driver_version="")
    if name in _ARCHIVE_READY:
        return hv
    import jinja2
    with open(os.path.join(ROLE, "templates", "driver.pref.j2")) as handle:
        pref = jinja2.Template(handle.read()).render(ansible_managed="test", **hv)
    host.run("mkdir -p /tmp/archive-check/lists/partial && cat > /tmp/archive-check/distro.pref <<'EOF'\n%s\nEOF" % pref)
    host.run("cp -n /var/lib/apt/lists/*archive.ubuntu.com* /var/lib/apt/lists/*security.ubuntu.com* "
             "/tmp/archive-check/lists/ 2>/dev/null; true")
    update = host.run("apt-get -q %s update" % ARCHIVE_OPTS)
    assert update.rc == 0, update.stderr
    _ARCHIVE_READY.add(name)
    return hv


@pytest.mark.parametrize("modules", ["prebuilt", "dkms"])
def test_distro_package_names_exist_in_the_real_ubuntu_archive(host, modules):
    """Every package of the `distro` source exists in the real Ubuntu archive
    (restricted, -updates, -security) with a version of the branch."""
    hv = _archive_setup(host, modules)
    branch = hv["gpu_worker_driver_branch"]
    for pkg in hv["gpu_worker__driver_packages"]:
        policy = host.check_output("apt-cache %s policy %s 2>/dev/null" % (ARCHIVE_OPTS, shlex.quote(pkg)))
        match = re.search(r"Candidate: (\S+)", policy)
        assert match and match.group(1) != "(none)", "%s is not in the Ubuntu archive:\n%s" % (pkg, policy)
        if pkg.startswith("nvidia-"):
            assert match.group(1).startswith(branch + "."), "%s's candidate is %s" % (pkg, match.group(1))


@pytest.mark.parametrize("modules", ["prebuilt", "dkms"])
def test_distro_packages_never_resolve_to_another_branch(host, modules):
    """apt, with the role's pin, either installs the `distro` packages entirely
    from the branch or refuses; it never pulls in another branch. (In the
    archive of late 2026 Ubuntu's 570-server packages are transitional packages
    for 580-server, so apt refuses, and so does the role, with a message.)"""
    hv = _archive_setup(host, modules)
    branch = hv["gpu_worker_driver_branch"]
    packages = hv["gpu_worker__driver_packages"]
    sim = host.run("apt-get -s -q %s install %s" % (ARCHIVE_OPTS, " ".join(packages)))
    inst = dict(re.findall(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ", sim.stdout, re.M))
    other = [n for n in inst if re.search(r"^(lib)?nvidia-.*-(?!%s)[0-9]{3}(-|$)" % branch, n)]
    assert other == [], "the %s driver pulls in another branch: %s" % (branch, other)
    if sim.rc == 0:
        for pkg in packages:
            assert pkg in inst
        for pkg, version in inst.items():
            if re.match(r"^(lib)?nvidia-", pkg):
                assert version.startswith(branch + "."), "%s resolves to %s" % (pkg, version)
    else:
        # Refused: because a package of the branch needs another branch.
        assert re.search(r"Depends: (lib)?nvidia-\S+-[0-9]{3}", sim.stdout + sim.stderr), sim.stdout + sim.stderr


def test_prefetched_models_are_marked_and_listed_on_the_node(host, hv):
    # The Node's annotation is what the vllm role reads to run vLLM offline: it lists exactly
    # the models whose download completed, each with its marker and the served bytes.
    client, api = _cluster(hv)
    annotations = client.CoreV1Api(api).read_node(hv["gpu_worker_k3s_node_name"]).metadata.annotations or {}
    listed = json.loads(annotations["homelab.gpu/cached-models"])
    if not hv["gpu_worker_prefetch_models"]:
        assert listed == []
        return
    assert listed == sorted(m["name"] for m in hv["gpu_worker_models"])
    for name in listed:
        marker = host.file("%s/models--%s" % (hv["gpu_worker__marker_dir"], name.replace("/", "--")))
        snapshot = json.loads(marker.content_string)["snapshot"]
        cached = host.file(snapshot + "/model.safetensors")
        assert cached.sha256sum == host.file("/srv/fake-hf-hub/%s/model.safetensors" % name).sha256sum
