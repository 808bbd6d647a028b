"""svrt_model: the VRT backbone (official-checkpoint compatible) and, later, the VRT+Spike model."""

from svrt_model.checkpoint import load_official_checkpoint
from svrt_model.config import VRTConfig, dvd_deblurring, gopro_deblurring, svrt_baseline, tiny
from svrt_model.layers.spike_accumulator import SpikeAccumulator
from svrt_model.vrt import VRT

__all__ = [
    "SpikeAccumulator",
    "VRT",
    "VRTConfig",
    "dvd_deblurring",
    "gopro_deblurring",
    "load_official_checkpoint",
    "svrt_baseline",
    "tiny",
]
