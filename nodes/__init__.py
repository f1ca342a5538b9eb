"""nodeflow's built-in diffusion node pack."""
