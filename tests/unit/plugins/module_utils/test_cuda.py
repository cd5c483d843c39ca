# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CUDA rules: NVIDIA's driver tables as test vectors, NVIDIA_REQUIRE_* as nvidia-container-cli evaluates it."""

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import cuda
from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda as ic
from ansible_collections.homelab.gpu.plugins.module_utils.known_images import (
    REQUIRE_CUDA_12_4,
    REQUIRE_CUDA_12_8,
    REQUIRE_CUDA_12_9,
)

RTX3060 = "NVIDIA GeForce RTX 3060"
A100 = "NVIDIA A100-SXM4-80GB"

# CUDA Toolkit Release Notes, "CUDA Toolkit and Corresponding Driver Versions" (Linux).
MIN_DRIVER_TABLE = [
    ("13.2.0", "595.45.04"), ("13.2.1", "595.58.03"), ("13.2.2", "595.71.05"),
    ("13.1.0", "590.44.01"), ("13.1.1", "590.48.01"),
    ("13.0.0", "580.65.06"), ("13.0.1", "580.82.07"), ("13.0.2", "580.95.05"),
    ("12.9.0", "575.51.03"), ("12.9.1", "575.57.08"),
    ("12.8.0", "570.26"), ("12.8.1", "570.124.06"),
    ("12.6.0", "560.28.03"), ("12.6.1", "560.35.03"), ("12.6.2", "560.35.03"), ("12.6.3", "560.35.05"),
    ("12.5.0", "555.42.02"), ("12.5.1", "555.42.06"),
    ("12.4.0", "550.54.14"), ("12.4.1", "550.54.15"),
    ("12.3.0", "545.23.06"), ("12.3.1", "545.23.08"),
    ("12.2.0", "535.54.03"), ("12.2.1", "535.86.09"), ("12.2.2", "535.104.05"),
    ("12.1.0", "530.30.02"),
    ("12.0.0", "525.60.13"), ("12.0.1", "525.85.12"),
    ("11.8.0", "520.61.05"),
    ("11.7.0", "515.43.04"), ("11.7.1", "515.48.07"),
    ("11.6.0", "510.39.01"), ("11.6.1", "510.47.03"), ("11.6.2", "510.47.03"),
    ("11.5.0", "495.29.05"),
    ("11.4.0", "470.42.01"), ("11.4.1", "470.57.02"), ("11.4.2", "470.57.02"),
    ("11.4.3", "470.82.01"), ("11.4.4", "470.82.01"),
]

BRANCHES = [(470, "11.4"), (495, "11.5"), (510, "11.6"), (515, "11.7"), (520, "11.8"), (525, "12.0"),
            (530, "12.1"), (535, "12.2"), (545, "12.3"), (550, "12.4"), (555, "12.5"), (560, "12.6"),
            (565, "12.7"), (570, "12.8"), (575, "12.9"), (580, "13.0"), (590, "13.1"), (595, "13.2")]

# The newest driver of the branch before each CUDA release's branch (one below the minimum).
PREVIOUS_BRANCH_DRIVER = {
    "13.2": "590.48.01", "13.1": "580.95.05", "13.0": "575.57.08", "12.9": "570.195.03",
    "12.8": "565.57.01", "12.6": "555.58.02", "12.5": "550.163.01", "12.4": "545.29.06",
    "12.3": "535.274.02", "12.2": "530.41.03", "12.1": "525.147.05", "12.0": "520.61.05",
    "11.8": "515.105.01", "11.7": "510.108.03", "11.6": "495.46", "11.5": "470.256.02",
}


@pytest.mark.parametrize("text,expected", [
    ("12.8.1", (12, 8, 1)), ("570.124.06", (570, 124, 6)), ("12", (12,)), ("v12.4", (12, 4)), (" 12.8 ", (12, 8)),
])
def test_parse_version(text, expected):
    assert cuda.parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "12.x", "twelve", "12..8", None, "-1"])
def test_parse_version_rejects_with_the_text(text):
    with pytest.raises(ValueError) as err:
        cuda.parse_version(text)
    assert "version" in str(err.value)


@pytest.mark.parametrize("branch,expected", BRANCHES)
def test_cuda_for_driver_branch_table(branch, expected):
    assert cuda.cuda_for_driver("%d.10.01" % branch) == expected


def test_cuda_for_driver_reference_lab_and_edges():
    assert cuda.cuda_for_driver("570.195.03") == "12.8"
    assert cuda.cuda_for_driver("570.26") == "12.8"
    assert cuda.cuda_for_driver("418.40.04") is None  # older than the table
    assert cuda.cuda_for_driver("540.1") == "12.2"  # unknown branch: the lower neighbour (a lower bound)
    assert cuda.cuda_for_driver("610.10") == "13.2"  # newer than the table: the newest known, a lower bound
    assert cuda.cuda_for_driver(None) is None


@pytest.mark.parametrize("release,driver", MIN_DRIVER_TABLE)
def test_min_driver_for_cuda_matches_nvidia_table(release, driver):
    assert cuda.min_driver_for_cuda(release) == driver


def test_min_driver_for_cuda_major_minor_is_the_ga_driver():
    assert cuda.min_driver_for_cuda("12.8") == "570.26"
    assert cuda.min_driver_for_cuda("12.7") is None  # there is no CUDA 12.7 toolkit
    assert cuda.min_driver_for_cuda_at_least("12.7") == "570.26"
    assert cuda.min_driver_for_cuda("12.8.9") == "570.124.06"  # an unknown update: newest known one


@pytest.mark.parametrize("release,driver", MIN_DRIVER_TABLE)
def test_driver_at_the_minimum_runs_the_release_on_a_geforce(release, driver):
    verdict = cuda.check_image_cuda(image="example/cuda:%s" % release, image_cuda=release, require_cuda=None,
                                    driver_version=driver, driver_cuda=None, gpu_product=RTX3060)
    assert verdict["verdict"] == "pass", verdict["message"]
    assert verdict["rule"] == "within-driver-cuda"


@pytest.mark.parametrize("release,driver", [row for row in MIN_DRIVER_TABLE if not row[0].startswith("11.4.")])
def test_driver_of_the_previous_branch_fails_on_a_geforce(release, driver):
    # 11.4 (R470) is the oldest row: there is no older branch in the table to test against.
    older = PREVIOUS_BRANCH_DRIVER[".".join(release.split(".")[:2])]
    verdict = cuda.check_image_cuda(image="example/cuda:%s" % release, image_cuda=release, require_cuda=None,
                                    driver_version=older, driver_cuda=None, gpu_product=RTX3060)
    assert verdict["verdict"] == "fail", verdict["message"]
    assert verdict["rule"] in ("no-forward-compat-consumer",)
    assert older in verdict["message"] and release in verdict["message"]
    # The advice names a driver that is new enough.
    assert cuda.min_driver_for_cuda(release) in verdict["suggestion"]


def test_older_driver_patch_within_the_branch_still_reports_the_same_cuda():
    # 570.124.05 is below 12.8 Update 1's minimum but reports CUDA 12.8: NVIDIA_REQUIRE_CUDA cuda>=12.8 holds.
    verdict = cuda.check_image_cuda(image="vllm/vllm-openai:v0.10.1.1", image_cuda="12.8.1",
                                    require_cuda=REQUIRE_CUDA_12_8, driver_version="570.124.05",
                                    driver_cuda="12.8", gpu_product=RTX3060)
    assert verdict["verdict"] == "pass"


# ---------------------------------------------------------------- NVIDIA_REQUIRE_*

def test_parse_require_or_of_ands():
    assert cuda.parse_require("cuda>=12.4 brand=tesla,driver>=470,driver<471") == [
        [("cuda", ">=", "12.4")],
        [("brand", "=", "tesla"), ("driver", ">=", "470"), ("driver", "<", "471")],
    ]


def test_parse_require_keys_case_insensitive_and_extra_separators_skipped():
    assert cuda.parse_require("  CUDA>=12.8  ,Brand!=GeForce, ") == [
        [("cuda", ">=", "12.8")], [("brand", "!=", "GeForce")]]
    assert cuda.parse_require("") == []


@pytest.mark.parametrize("expr", [
    "cuda==12.8",  # dsl.c has no ==
    "cuda=>12.8", "cuda>=", ">=12.8", "cuda", "gpu>=1", "cuda>=12.x", "brand>tesla", "driver<=470a",
])
def test_parse_require_rejects_what_the_runtime_calls_invalid(expr):
    with pytest.raises(cuda.RequireError) as err:
        cuda.parse_require(expr)
    assert "invalid expression" in str(err.value)


@pytest.mark.parametrize("op,value,expected", [
    ("=", "12.8", True), ("=", "12.8.0", True), ("!=", "12.8", False), ("<", "12.9", True), ("<=", "12.8", True),
    (">", "12.7", True), (">=", "12.10", False), (">", "12.8", False), ("<", "12.8", False), ("=", "12", False),
])
def test_evaluate_require_operators_compare_dotted_numbers(op, value, expected):
    ok, condition = cuda.evaluate_require("cuda%s%s" % (op, value), cuda="12.8", driver="570.195.03")
    assert ok is expected
    assert condition == (None if expected else "cuda%s%s" % (op, value))


def test_evaluate_require_12_4_image_on_driver_570_geforce():
    assert cuda.evaluate_require(REQUIRE_CUDA_12_4, cuda="12.8", driver="570.195.03", brand="geforcertx") == (True, None)


def test_evaluate_require_12_4_image_on_driver_535_geforce_passes_through_the_brand_clause():
    # cuda>=12.4 fails (driver 535 reports 12.2) but brand=geforcertx,driver>=535,driver<536 holds:
    # the runtime starts it (and CUDA init would then need forward compatibility).
    assert cuda.evaluate_require(REQUIRE_CUDA_12_4, cuda="12.2", driver="535.183.01", brand="geforcertx") == (True, None)
    assert cuda.evaluate_require(REQUIRE_CUDA_12_4, cuda="12.3", driver="545.29.06", brand="geforcertx") == (
        False, "cuda>=12.4")


@pytest.mark.parametrize("expr", [REQUIRE_CUDA_12_8, REQUIRE_CUDA_12_9])
def test_evaluate_require_12_8_and_12_9_bases_list_no_geforce(expr):
    floor = expr.split(" ")[0]
    # A GeForce on an older branch that the data-center brands may use: refused, as the runtime does.
    ok, condition = cuda.evaluate_require(expr, cuda="12.2", driver="535.183.01", brand="geforcertx")
    assert (ok, condition) == (False, floor)
    # A Tesla on the same driver passes through its forward-compatibility clause.
    assert cuda.evaluate_require(expr, cuda="12.2", driver="535.183.01", brand="tesla") == (True, None)


def test_evaluate_require_12_9_base_on_driver_570():
    assert cuda.evaluate_require(REQUIRE_CUDA_12_9, cuda="12.8", driver="570.195.03", brand="geforcertx") == (
        False, "cuda>=12.9")
    assert cuda.evaluate_require(REQUIRE_CUDA_12_9, cuda="12.8", driver="570.195.03", brand="TESLA") == (True, None)
    assert cuda.evaluate_require(REQUIRE_CUDA_12_9, cuda="12.9", driver="575.57.08", brand="geforcertx") == (True, None)


def test_evaluate_require_without_gpu_brand_and_arch_count_as_satisfied():
    assert cuda.evaluate_require("brand=tesla,arch>=9.0", cuda="12.8", driver="570.1") == (True, None)
    assert cuda.evaluate_require("brand=tesla", cuda="12.8", driver="570.1", brand="geforcertx") == (False, "brand=tesla")
    assert cuda.evaluate_require("arch>=9.0", cuda="12.8", driver="570.1", arch="8.6") == (False, "arch>=9.0")


def test_evaluate_require_several_variables_are_anded():
    ok, condition = cuda.evaluate_require(["cuda>=12.4", "driver>=575"], cuda="12.8", driver="570.195.03")
    assert (ok, condition) == (False, "driver>=575")
    assert cuda.evaluate_require(["cuda>=12.4", "driver>=570"], cuda="12.8", driver="570.195.03") == (True, None)


def test_evaluate_require_invalid_expression_only_when_reached():
    # dsl.c stops at the first satisfied alternative, so a later bad term is never looked at.
    assert cuda.evaluate_require("cuda>=12.4 bogus>1", cuda="12.8", driver="570.1") == (True, None)
    ok, condition = cuda.evaluate_require("cuda>=12.9 bogus>1", cuda="12.8", driver="570.1")
    assert not ok and "invalid expression" in condition and "bogus" in condition


def test_evaluate_require_brand_is_case_insensitive():
    assert cuda.evaluate_require("brand=GeForceRTX", cuda="12.8", driver="570.1", brand="geforcertx") == (True, None)
    assert cuda.evaluate_require("brand!=geforcertx", cuda="12.8", driver="570.1", brand="GEFORCERTX")[0] is False


def test_requirements_from_env_as_the_toolkit_collects_them():
    env = {"NVIDIA_REQUIRE_CUDA": "cuda>=12.8", "NVIDIA_REQUIRE_DRIVER": "driver>=570",
           "NVIDIA_REQUIRE_JETPACK": "csv-mounts=all", "CUDA_VERSION": "12.8.1", "PATH": "/bin"}
    assert cuda.requirements_from_env(env) == ["cuda>=12.8", "driver>=570"]
    assert cuda.requirements_from_env(dict(env, NVIDIA_DISABLE_REQUIRE="true")) == []
    assert cuda.requirements_from_env(dict(env, NVIDIA_DISABLE_REQUIRE="no")) == ["cuda>=12.8", "driver>=570"]
    # A legacy image (CUDA_VERSION without NVIDIA_REQUIRE_CUDA) gets cuda>=major.minor.
    assert cuda.requirements_from_env({"CUDA_VERSION": "12.1.0"}) == ["cuda>=12.1"]


def test_cuda_from_require():
    assert cuda.cuda_from_require(REQUIRE_CUDA_12_8) == "12.8"
    assert cuda.cuda_from_require("brand=tesla,driver>=470") is None


# ---------------------------------------------------------------- GPUs

@pytest.mark.parametrize("product,klass,brand", [
    ("NVIDIA GeForce RTX 3060", "consumer", "geforcertx"),
    ("NVIDIA-GeForce-RTX-3060-SHARED", "consumer", "geforcertx"),
    ("NVIDIA GeForce GTX 1080 Ti", "consumer", "geforce"),
    ("RTX 4090", "consumer", "geforcertx"),
    ("NVIDIA TITAN RTX", "consumer", "titanrtx"),
    ("NVIDIA TITAN V", "consumer", "titan"),
    ("NVIDIA RTX A4000", "workstation", "nvidiartx"),
    ("NVIDIA RTX 6000 Ada Generation", "workstation", "nvidiartx"),
    ("Quadro RTX 8000", "workstation", "quadrortx"),
    ("NVIDIA A100-SXM4-80GB", "datacenter", None),
    ("Tesla T4", "datacenter", None),
    ("NVIDIA H100 80GB HBM3", "datacenter", None),
    ("NVIDIA-L4", "datacenter", None),
    ("", "unknown", None),
    (None, "unknown", None),
    ("Some Future GPU", "unknown", None),
])
def test_gpu_class_and_brand(product, klass, brand):
    assert cuda.gpu_class(product) == klass
    assert cuda.is_consumer_brand(product) is (klass == "consumer")
    assert cuda.nvml_brand(product) == brand


# ---------------------------------------------------------------- verdicts

def check(**kw):
    base = dict(image="vllm/vllm-openai:v0.15.1", image_cuda="12.9.1", require_cuda=None,
                driver_version="570.195.03", driver_cuda="12.8", gpu_product=RTX3060)
    base.update(kw)
    return ic.check(**base)


def test_the_rules_are_one_ordered_table_and_every_verdict_names_the_rule_that_decided():
    names = [name for name, _rule in cuda.RULES]
    assert names == ["image-cuda-unknown", "driver-unknown", "nvidia-require", "within-driver-cuda",
                     "no-forward-compat-consumer", "forward-compat-gpu-unknown", "forward-compat-unsupported-gpu",
                     "forward-compat-datacenter", "major-version-driver"]
    cases = [dict(image_cuda=None), dict(driver_version=None, driver_cuda=None), dict(require_cuda=REQUIRE_CUDA_12_9),
             dict(image_cuda="12.4.0"), dict(), dict(gpu_product=None), dict(gpu_product="NVIDIA RTX A6000"),
             dict(gpu_product=A100), dict(gpu_product=A100, image_cuda="13.0.0")]
    decided = [check(**kw)["rule"] for kw in cases]
    assert decided == names
    for kw in cases:
        v = check(**kw)
        assert "[rule %s]" % v["rule"] in v["message"]


def test_without_known_tags_the_suggestion_is_generic():
    v = cuda.check_image_cuda(image="vllm/vllm-openai:v0.15.1", image_cuda="12.9.1", driver_version="570.195.03",
                              driver_cuda="12.8", gpu_product=RTX3060)
    assert v["suggestion"] == "use an image built on CUDA 12.8 or older, or upgrade the driver to >= 575.57.08"


def test_reference_lab_image_passes():
    v = check(image="vllm/vllm-openai:v0.8.5.post1", image_cuda="12.4.0", require_cuda=REQUIRE_CUDA_12_4)
    assert v["verdict"] == "pass" and v["rule"] == "within-driver-cuda"
    assert v["suggestion"] is None and v["warnings"] == []
    assert v["inputs"]["driver_cuda"] == "12.8" and v["inputs"]["gpu_class"] == "consumer"


def test_cuda_12_9_image_on_driver_570_geforce_fails_naming_everything():
    v = check(require_cuda=REQUIRE_CUDA_12_9)
    assert v["verdict"] == "fail"
    assert v["rule"] == "nvidia-require"
    msg = v["message"]
    for part in ("vllm/vllm-openai:v0.15.1", "12.9.1", "570.195.03", "12.8", RTX3060, "cuda>=12.9",
                 "vllm/vllm-openai:v0.10.1.1 (CUDA 12.8.1) or older", "575.57.08"):
        assert part in msg, part


def test_cuda_12_9_image_without_require_on_geforce_fails_with_error_804_rule():
    v = check()
    assert v["verdict"] == "fail" and v["rule"] == "no-forward-compat-consumer"
    assert "804" in v["message"] and "forward compatibility" in v["message"]
    assert v["suggestion"] == "use vllm/vllm-openai:v0.10.1.1 (CUDA 12.8.1) or older, or upgrade the driver to >= 575.57.08"


def test_runtime_brand_clause_does_not_save_a_newer_image_on_geforce():
    # v0.8.5 (CUDA 12.4) on driver 535 (CUDA 12.2): NVIDIA_REQUIRE_CUDA admits it through
    # brand=geforcertx,driver>=535,driver<536, but CUDA init then needs forward compatibility (error 804).
    v = check(image="vllm/vllm-openai:v0.8.5", image_cuda="12.4.0", require_cuda=REQUIRE_CUDA_12_4,
              driver_version="535.183.01", driver_cuda="12.2")
    assert v["verdict"] == "fail" and v["rule"] == "no-forward-compat-consumer"
    assert "use vllm/vllm-openai:v0.6.6.post1 (CUDA 12.1.0) or older" in v["suggestion"]
    assert "550.54.14" in v["suggestion"]


def test_non_vllm_image_gets_a_generic_suggestion():
    v = check(image="registry.example:5000/team/llm:1", image_cuda="12.9.0")
    assert v["verdict"] == "fail"
    assert "use an image built on CUDA 12.8 or older" in v["suggestion"]
    assert "575.51.03" in v["suggestion"]


def test_same_major_newer_minor_on_datacenter_passes_with_a_warning():
    v = check(gpu_product=A100)
    assert v["verdict"] == "pass" and v["rule"] == "forward-compat-datacenter"
    assert len(v["warnings"]) == 1 and "forward compatibility" in v["warnings"][0]


def test_newer_image_on_unknown_gpu_is_unknown():
    v = check(gpu_product=None)
    assert v["verdict"] == "unknown" and v["rule"] == "forward-compat-gpu-unknown"
    assert "gpu_product" in v["message"]


def test_newer_image_on_workstation_gpu_fails():
    v = check(gpu_product="NVIDIA RTX A4000")
    assert v["verdict"] == "fail" and v["rule"] == "forward-compat-unsupported-gpu"


def test_cuda_13_image_on_driver_570_datacenter_without_require_fails_on_the_driver_range():
    v = check(image="vllm/vllm-openai:v0.20.0", image_cuda="13.0.0", gpu_product=A100)
    assert v["verdict"] == "fail" and v["rule"] == "major-version-driver"
    assert "branch 580" in v["message"] and "580.65.06" in v["message"]


def test_cuda_13_image_on_older_datacenter_driver_admitted_by_its_require_passes_with_warning():
    require = "cuda>=13.0 brand=tesla,driver>=570,driver<571"
    v = check(image="example/cuda:13", image_cuda="13.0.0", require_cuda=require, gpu_product=A100)
    assert v["verdict"] == "pass" and v["rule"] == "forward-compat-datacenter" and v["warnings"]
    # Another requirement without a cuda floor does not count as the image admitting the driver.
    v = check(image="example/cuda:13", image_cuda="13.0.0", require_cuda=["driver>=500"], gpu_product=A100)
    assert v["verdict"] == "fail" and v["rule"] == "major-version-driver"


def test_cuda_13_image_on_driver_580_passes():
    v = check(image="vllm/vllm-openai:v0.20.0", image_cuda="13.0.0", driver_version="580.95.05", driver_cuda="13.0")
    assert v["verdict"] == "pass"


def test_older_major_on_new_driver_passes_with_803_warning():
    v = check(image_cuda="12.9.1", driver_version="580.95.05", driver_cuda="13.0")
    assert v["verdict"] == "pass" and v["rule"] == "within-driver-cuda"
    assert "803" in v["warnings"][0]


def test_unknown_image_cuda_is_unknown_and_says_how_to_provide_it():
    v = check(image_cuda=None)
    assert v["verdict"] == "unknown" and v["rule"] == "image-cuda-unknown"
    assert "image_cuda" in v["message"] and "cuda_version" in v["message"]


def test_image_cuda_from_require_floor_when_cuda_version_missing():
    v = check(image_cuda=None, require_cuda="cuda>=12.4")
    assert v["verdict"] == "pass" and v["inputs"]["image_cuda"] == "12.4"


def test_unknown_driver_is_unknown():
    v = check(driver_version=None, driver_cuda=None)
    assert v["verdict"] == "unknown" and v["rule"] == "driver-unknown"
    assert "driver_version" in v["message"]


def test_driver_cuda_is_derived_from_driver_version():
    v = check(image_cuda="12.4.0", driver_cuda=None)
    assert v["verdict"] == "pass" and v["inputs"]["driver_cuda"] == "12.8"


def test_require_failure_wins_over_version_rule():
    # The image CUDA is fine but another NVIDIA_REQUIRE_* asks for a newer driver.
    v = check(image_cuda="12.4.0", require_cuda=["cuda>=12.4", "driver>=575"])
    assert v["verdict"] == "fail" and v["rule"] == "nvidia-require"
    assert "driver>=575" in v["message"]


def test_invalid_require_expression_fails_like_the_runtime():
    v = check(image_cuda="12.4.0", require_cuda="cuda>=12.9 cuda==12.8")
    assert v["verdict"] == "fail" and "invalid expression" in v["message"]
