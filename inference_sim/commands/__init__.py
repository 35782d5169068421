"""Command groups of the CLI; every module here registers its commands on ``inference_sim.common.app``."""
