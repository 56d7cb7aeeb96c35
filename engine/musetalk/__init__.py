"""MuseTalk 1.5: the engine's second lip-sync model (256 px faces, single-step latent UNet).

MuseTalk redraws the lower half of a 256x256 face crop in the latent space of the Stable
Diffusion VAE (sd-vae-ft-mse), driven by whisper-tiny audio features, in one UNet step. This
package reproduces the reference implementation (TMElyralab/MuseTalk, v1.5 inference path)
stage by stage; ``tests/test_musetalk_*.py`` prove each stage against the reference's numbers.

Modules, one job each:

- :mod:`.layout`   the official download layout: which file goes where, and what is missing
- :mod:`.weights`  safe, strict reading of the weight files (no pickle code runs)
- :mod:`.networks` the three networks built from their config files (diffusers, transformers)
- :mod:`.audio`    speech to per-video-frame audio prompts (log-mel, whisper, windows, PE)
- :mod:`.face`     256x256 face crops, VAE inputs and where a generated face is pasted back
- :mod:`.generate` crops + prompts to new faces: VAE encode, one UNet step, VAE decode

The networks need the optional extra ``lipsyncd[musetalk]`` (diffusers, transformers).
"""
