"""FLOPs of DavidNet, counted from its layer shapes (framework-free).

A 3x3 convolution producing an HxWxCout map from Cin channels does H*W*Cin*Cout*9
multiply-adds; a multiply-add is 2 FLOPs. BatchNorm, ReLU, pooling and the residual adds
are left out (under 1% at width 64). Training costs about 3x the forward pass: the
forward, the gradient with respect to each layer's input, and with respect to its weights.
"""


def conv_macs(width):
    c = width
    layers = [  # (output height/width, Cin, Cout) of each 3x3 convolution, in order
        (32, 3, c),                           # prep
        (32, c, 2 * c),                       # layer1 conv (pooled to 16 after)
        (16, 2 * c, 2 * c), (16, 2 * c, 2 * c),  # layer1 residual
        (16, 2 * c, 4 * c),                   # layer2 conv (pooled to 8)
        (8, 4 * c, 8 * c),                    # layer3 conv (pooled to 4)
        (4, 8 * c, 8 * c), (4, 8 * c, 8 * c),  # layer3 residual
    ]
    return sum(hw * hw * cin * cout * 9 for hw, cin, cout in layers) + 8 * c * 10  # + linear


def forward_flops(width):
    return 2 * conv_macs(width)


def train_flops(width):
    return 3 * forward_flops(width)
