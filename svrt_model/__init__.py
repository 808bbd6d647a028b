"""svrt_model: the VRT backbone (official-checkpoint compatible) and the VRT+Spike (S-VRT) model."""

from svrt_model.checkpoint import load_official_checkpoint
from svrt_model.config import VRTConfig, dvd_deblurring, gopro_deblurring, svrt_baseline, tiny
from svrt_model.spike.accumulator import SpikeAccumulator
from svrt_model.vrt import VRT
from svrt_model.vrt_spike import VRTSpike
from svrt_model.vrt_spike_config import VRTSpikeConfig, svrt_base, svrt_tiny

__all__ = [
    "SpikeAccumulator",
    "VRT",
    "VRTConfig",
    "VRTSpike",
    "VRTSpikeConfig",
    "dvd_deblurring",
    "gopro_deblurring",
    "load_official_checkpoint",
    "svrt_base",
    "svrt_baseline",
    "svrt_tiny",
    "tiny",
]
