"""Order-agnostic autoregressive diffusion (OA-ARDM)."""
