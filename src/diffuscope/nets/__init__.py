"""Networks: the U-Net and its embeddings (later the autoencoder)."""

from diffuscope.nets.unet import UNet, UNetConfig, check_config, count_parameters

__all__ = ["UNet", "UNetConfig", "check_config", "count_parameters"]
