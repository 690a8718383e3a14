"""Configuration: dataclass schema, YAML merging, dotted CLI overrides."""

from spml.config.loader import ConfigError, load_config, parse_override, read_yaml, save_config, to_dict
from spml.config.resume import RESUME_KEYS, resume_config
from spml.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    MPCConfig,
    OptimConfig,
    SPMLConfig,
    TrainConfig,
)

__all__ = [
    "RESUME_KEYS",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "MPCConfig",
    "ModelConfig",
    "OptimConfig",
    "SPMLConfig",
    "TrainConfig",
    "load_config",
    "parse_override",
    "read_yaml",
    "resume_config",
    "save_config",
    "to_dict",
]
