# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gpu_worker preflight's filter: lspci -mm lines in, one refusal sentence (or '') out."""

from ansible_collections.homelab.gpu.plugins.filter.driver_branch_error import driver_branch_error

GTX1080 = '05:00.0 "VGA compatible controller" "NVIDIA Corporation" "GP104 [GeForce GTX 1080]" -ra1 "Micro-Star" "x"'
RTX3060 = ('05:00.0 "VGA compatible controller" "NVIDIA Corporation" "GA106 [GeForce RTX 3060 Lite Hash Rate]" '
           '-ra1 "ASUSTeK Computer Inc." "Device 886d"')
AUDIO = '05:00.1 "Audio device" "NVIDIA Corporation" "GP104 High Definition Audio Controller" -ra1 "x" "y"'


def test_a_branch_that_dropped_the_gpu_is_one_sentence_naming_both():
    text = driver_branch_error("590", [GTX1080, AUDIO])
    assert "driver branch 590 does not support the Pascal GPU GP104 [GeForce GTX 1080]:" in text
    assert 'Set gpu_worker_driver_branch to "580"' in text


def test_a_supporting_branch_and_an_unknown_chip_pass():
    assert driver_branch_error("570", [RTX3060]) == ""
    assert driver_branch_error("580", [GTX1080]) == ""
    assert driver_branch_error("590", ['01:00.0 "VGA compatible controller" "NVIDIA Corporation" "Device 2c02"']) == ""
    assert driver_branch_error("590", []) == ""
    assert driver_branch_error("590", [AUDIO]) == ""
