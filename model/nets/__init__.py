"""The networks, each in one file: stage 1's motion DiT, stage 2's frame UNet and
reference autoencoder, the lip expert and its face model, the perceptual loss."""
