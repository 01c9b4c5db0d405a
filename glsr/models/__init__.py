"""Networks, variants and the in-graph sampler of G&LSR_ω."""
from glsr.models.checkpoint import load_checkpoint, save_checkpoint
from glsr.models.factory import create_model, default_mean_shape
from glsr.models.network import GLSRNet
from glsr.models.registry import VARIANTS, VariantConfig, get_variant, list_variants, register_variant

__all__ = ["GLSRNet", "VARIANTS", "VariantConfig", "create_model", "default_mean_shape", "get_variant",
           "list_variants", "load_checkpoint", "register_variant", "save_checkpoint"]
