"""Parameters and dense MACs per image inference from a config."""
import dataclasses

import pytest

from spikeclip_deploy.config import get_config
from spikeclip_deploy.costs import image_macs, model_costs
from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.export import lower_encoder
from spikeclip_deploy.export.host import host_macs
from spikeclip_deploy.lowering.graph import run_side_layers
from spikeclip_deploy.nn.init import random_init
from spikeclip_deploy.targets import get_target
from spikeclip_deploy.verify.energy import ann_macs, host_op_macs, synapse_rows

# the tiny twin at 32x32: stem 3->4 (32x32, 3x3); pool 3x3/2 of 4x32x32 (4x16x16 windows of 9);
# conv 4->8 on 16x16; pool of 8x16x16 (8x8x8 windows); conv 8->8 on 8x8; depthwise 3x3 of 8 on
# 8x8; 1x1 8->16 and 16->8 on 8x8; readout 8 -> 384
TWIN_MACS = (4 * 32 * 32 * 3 * 9 + 4 * 16 * 16 * 9 + 8 * 16 * 16 * 4 * 9 + 8 * 8 * 8 * 9
             + 8 * 8 * 8 * 8 * 9 + 8 * 8 * 8 * 9 + 16 * 64 * 8 + 8 * 64 * 16 + 8 * 384)


def test_twin_macs_and_parameters_by_hand(twin_config):
    # image: stem 3*4*9 + BN 8; convs 4*8*9 + 16, 8*8*9 + 16; depthwise 8*9 + 16; MLP 8*16 + 32,
    # 16*8 + 16; TDW 1; projection 8*384 + 384. Text: tokens 30522 x 4, positions 20 x 4,
    # 80 -> 16, 16 -> 384 (with biases)
    image = 116 + 304 + 592 + 88 + 160 + 144 + 1 + 3456
    text = 30522 * 4 + 80 + 80 * 16 + 16 + 16 * 384 + 384
    assert TWIN_MACS == 259072
    assert model_costs(twin_config) == {
        "parameters": {"image": image, "text": text, "total": image + text},
        "image_macs": TWIN_MACS}


@pytest.mark.parametrize("residual", ["graded", "copies"])
def test_twin_macs_equal_the_ann_count_of_its_spiking_form_as_deployed(twin_config, residual):
    """The spiking form lowered for Loihi (its residual stream on graded relays, or its terms
    copied per reader; pools as synapses into OR LIFs): verify's ANN counterpart count of that
    graph is the twin's."""
    snn = random_init(dataclasses.replace(twin_config, neuron="lif", time_steps=4,
                                          text_arch="spiking-mlp"), 0)
    layers = run_side_layers(lower_encoder(snn, "image", get_target("loihi"), residual=residual))
    rows = synapse_rows(layers)
    # copies: there, and counted once; graded: none, relays instead (not synapse layers)
    assert any(row["copy_of"] for row in rows) == (residual == "copies")
    assert any(la.name.startswith("relay") for la in layers) == (residual == "graded")
    host = host_macs(snn)
    assert ann_macs(host["image_stem_macs"], rows, host_op_macs(layers),
                    host["image_readout_macs"]) == image_macs(twin_config) == TWIN_MACS


def test_registered_twin_equals_its_snn():
    assert image_macs(get_config("scratchclip-native-small")) == \
        image_macs(get_config("spikeclip-native-small"))


def test_a_transformer_has_no_graph_to_count():
    with pytest.raises(ConfigError, match="no chip graph to count MACs on"):
        image_macs(get_config("scratchclip-vit4-384"))
